package main

import (
	"flowpin/lb/apply"
	"flowpin/lb/nslock"
)

// lockWriter serializes apply and down with every other writer of this
// network namespace, and refuses beside a running daemon, which would undo
// their writes at its next sync. Privileges first: without them the lock
// directory is not writable either, and "run it as root" is the answer.
func lockWriter(role string) (*nslock.Held, error) {
	if err := apply.CheckPrivileges(); err != nil {
		return nil, err
	}
	ns, err := nslock.Here()
	if err != nil {
		return nil, err
	}
	return ns.Writer(role)
}

// lockDaemon claims this network namespace for the daemon's whole life:
// apply and down refuse while it runs, and a second daemon fails.
func lockDaemon() (*nslock.Held, error) {
	ns, err := nslock.Here()
	if err != nil {
		return nil, err
	}
	return ns.Daemon()
}
