package rulestest

import (
	"net/netip"

	"flowpin/rules"
)

// Events is rules.Events fed by the test (see Stream): Send delivers a
// notification, Lose ends the subscription as an overflow does, FailNext
// fails the next Subscribe calls. The zero value is ready to use.
type Events struct {
	Stream[rules.Event]
}

// Link sends an interface's change: up (with carrier), down, removed.
func (e *Events) Link(iface string, up, removed bool) bool {
	return e.Send(rules.Event{Kind: rules.EventLink, Iface: iface, Up: up, Removed: removed})
}

// NeighFailed sends that the kernel gave up resolving ip on iface.
func (e *Events) NeighFailed(iface string, ip netip.Addr) bool {
	return e.Send(rules.Event{Kind: rules.EventNeighFailed, Iface: iface, IP: ip})
}

// Neigh sends that ip on iface was resolved to mac.
func (e *Events) Neigh(iface string, ip netip.Addr, mac string) bool {
	return e.Send(rules.Event{Kind: rules.EventNeigh, Iface: iface, IP: ip, MAC: mac})
}

// Lose ends the subscription as an overflow does: an EventLost naming
// what, then the channel closed.
func (e *Events) Lose(what string) {
	e.End(rules.Event{Kind: rules.EventLost, What: what})
}
