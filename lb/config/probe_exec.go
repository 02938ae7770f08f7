package config

import (
	"strings"
	"unicode/utf8"
)

// The probe methods that are not a packet to a target.
const (
	// ProbeExec: Command is run (/bin/sh -c) with the link's name, interface,
	// mark, family and gateway in its environment; exit 0 is an answer. The
	// daemon kills it, with its process group, at the timeout.
	ProbeExec ProbeMethod = "exec"
	// ProbeARP: an ARP request (IPv4) or an NDP neighbour solicitation
	// (IPv6) for the gateway, on the link's interface; a reply is an
	// answer. It needs a link-layer neighbour: not on a point-to-point
	// interface (the planner refuses that, knowing the interfaces).
	ProbeARP ProbeMethod = "arp"
)

// MaxCommand bounds an exec probe's command.
const MaxCommand = 4096

// fillExecARP takes command and checks what the exec and arp methods
// cannot have.
func (c *Config) fillExecARP(i int, raw *rawCheck, out *HealthCheck) error {
	m := out.Method
	if raw.Command != nil && m != ProbeExec {
		return c.LinkError(i, "check.command", "%s: a command is for the exec method, and this check uses %s", quote(*raw.Command), m)
	}
	switch m {
	case ProbeExec:
		if raw.Command == nil || strings.TrimSpace(*raw.Command) == "" {
			return c.LinkError(i, "check.command", "missing: method exec runs a command (command: /usr/local/bin/check-wan, say)")
		}
		cmd := *raw.Command
		if len(cmd) > MaxCommand || !utf8.ValidString(cmd) || strings.ContainsRune(cmd, 0) {
			return c.LinkError(i, "check.command", "%s is not a command: at most %d bytes of text", quote(cmd), MaxCommand)
		}
		// A round runs the command once: one answer, whatever the targets.
		if out.Quorum > 1 {
			return c.LinkError(i, "check.quorum", "%d: an exec probe is one answer per round (the command's exit status); leave quorum at 1", out.Quorum)
		}
		out.Command = cmd
	case ProbeARP:
		if len(out.Targets) > 0 {
			return c.LinkError(i, "check.targets", "%s: the arp method asks for the gateway itself, on the link; remove targets (or probe them with icmp)", out.Targets[0])
		}
	}
	return nil
}
