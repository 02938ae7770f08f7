package daemon

import (
	"flowpin/lb/daemon/tally"
	"flowpin/lb/status"
	"flowpin/nft"
	"flowpin/nft/ct"
)

// flowMetrics are the daemon's metrics as the flow tally counts in them.
type flowMetrics struct{ m *Metrics }

func (f flowMetrics) Event(t ct.EventType)       { f.m.ctEvent(t) }
func (f flowMetrics) Lost()                      { f.m.ctEventsLost() }
func (f flowMetrics) Reconciled(corrected int64) { f.m.reconciled(corrected) }

// ReconcileInterval is how often the flow tally re-counts the conntrack
// table (Deps.ReconcileInterval's default).
const ReconcileInterval = tally.ReconcileInterval

// ErrCountsNotReady: the daemon has not finished its first count of the
// conntrack table (it just started), or does not follow conntrack; a
// status then counts from a dump (status.Collect).
var ErrCountsNotReady = status.ErrCountsNotReady

// FlowTally is the flows per mark from the daemon's memory, and each
// link's bytes and packets from its nft counters: O(links), whatever the
// number of flows. Bytes and packets are the link's traffic counted by
// its rules, carried over the table's rewrites, not those of the flows
// alive now.
func (d *Daemon) FlowTally() (status.Tally, error) {
	t, ready := d.flows.Tally()
	if !ready {
		return nil, ErrCountsNotReady
	}
	get := func(mark uint32) *status.Counters {
		c := t[mark]
		if c == nil {
			c = &status.Counters{}
			t[mark] = c
		}
		return c
	}
	if d.deps.Traffic != nil {
		m, err := d.trafficCounters()
		if err != nil {
			return nil, err
		}
		for _, l := range d.Config.Links {
			out, in := linkTraffic(m, l.Name)
			c := get(l.Mark)
			c.BytesOut, c.PacketsOut = out.Bytes, out.Packets
			c.BytesIn, c.PacketsIn = in.Bytes, in.Packets
		}
	}
	return t, nil
}

var linkTraffic = nft.LinkTraffic
