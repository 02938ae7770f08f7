package main

import (
	"sync/atomic"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// watchdogPing is the daemon loop's watchdog ping (WATCHDOG=1 to
// NOTIFY_SOCKET). It never blocks the loop: a datagram write to a socket
// whose reader stopped reading waits until there is room in its queue
// (unix(7)), forever if NOTIFY_SOCKET names something that is not
// systemd. So each ping is sent from a goroutine, and while one is still
// pending the next is dropped: at most one waits, and a manager that
// stopped reading gets no pings, as it would from a wedged loop.
func watchdogPing() func() {
	var pending atomic.Bool
	return func() {
		if !pending.CompareAndSwap(false, true) {
			return
		}
		go func() {
			defer pending.Store(false)
			_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}()
	}
}
