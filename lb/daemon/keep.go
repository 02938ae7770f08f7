package daemon

import (
	"fmt"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/daemon/keep"
	"flowpin/lb/plan"
)

// The fate of a down link's flows (deleted only where another link can
// take them) and the route that fails open when every link of a family is
// judged down are decided by the keep part (lb/daemon/keep, whose header
// says why); the daemon feeds it and carries out its decisions.

// failOpen is the down set of a family (IPv6 with v6) to plan with: the
// links the checks took down, or none when no link of the family is up.
func (d *Daemon) failOpen(v6 bool) map[string]string {
	// Units out by an override (an operator's down, a quota's standby)
	// or drained are out whatever the others' health: they neither count
	// towards failing open nor are put back by it.
	n, checked, forced := 0, map[string]string{}, d.drained(v6)
	for _, u := range d.units {
		if u.v6 != v6 {
			continue
		}
		name := d.Config.Links[u.link].Name
		why, out := d.board.Down(d.key(u))
		if _, over := d.board.Overridden(d.key(u)); over {
			if out {
				forced[name] = why
			} else if d.usable(u) {
				n++ // up by the operator: a link of the family that is up
			}
			// Up by the operator but unusable (its interface gone): it
			// carries nothing, and failing open must not count on it.
			continue
		}
		if _, drained := forced[name]; drained {
			continue
		}
		n++
		if out {
			checked[name] = why
		}
	}
	// No link of the family left to take new flows but for its checks'
	// judgement: the links on standby for their quota with
	// quota_last_resort take them, before failing open.
	if len(checked) == n {
		for _, name := range d.lastResorts(v6) {
			delete(forced, name)
			n++
		}
	}
	down, changed := d.keep.FailOpen(v6, checked, n)
	if changed {
		if d.keep.Open()[b2i(v6)] {
			d.Log.Warn("every link of the family is judged down: they all stay in the route (a failure they share, such as the probe target's, must not cut off every flow)", "family", keep.FamilyLabel(v6))
		} else {
			d.Log.Info("a link of the family is up again: the links judged down leave the route", "family", keep.FamilyLabel(v6))
		}
	}
	planned := make(map[string]string, len(down)+len(forced))
	for k, v := range down {
		planned[k] = v
	}
	for k, v := range forced {
		planned[k] = v
	}
	return planned
}

// settleFlows carries out what the keep part decides for each unit that
// is down and out of the route as last applied: its flows deleted where
// another link can take them, else left in place for now. Called on the
// loop's goroutine after each sync and each probe round.
func (d *Daemon) settleFlows() {
	units := make([]keep.Unit, len(d.units))
	for i, u := range d.units {
		units[i] = keep.Unit{Key: unitKey(d.Config.Links[u.link].Name, u.v6), Link: u.link, V6: u.v6}
	}
	for _, dec := range d.keep.Settle(d.Config, d.applied, units, d.takersFor) {
		l, u := d.applied.Links[dec.Unit.Link].Link, unit{link: dec.Unit.Link, v6: dec.Unit.V6}
		if dec.Flush {
			d.flushDown(l, u, dec.Plan)
		} else {
			d.keepFlows(l, u, dec.Why)
		}
	}
}

// takersFor judges the other links as takers of unit u's flows: live in
// u's family as last applied, and ready when up, answering, and up since
// before u's last failed round began (so a link that came back with u's
// own recovery under way, as after the probe target's outage, does not
// count yet).
func (d *Daemon) takersFor(u keep.Unit) keep.Takers {
	others := make([]string, len(d.Config.Links))
	for j, l := range d.Config.Links {
		others[j] = unitKey(l.Name, u.V6)
	}
	ready := d.board.Ready(u.Key, others, d.keep.FailedAt(u.Key))
	applied := d.applied
	return func(j int) (bool, bool) {
		lp := applied.Links[j]
		live := lp.InRoute && !u.V6 || lp.V6.InRoute && u.V6
		return live, live && ready[j]
	}
}

// haKeep is why an HA node leaves a down link's flows in place.
const haKeep = "ha: conntrackd would delete them on the peer too, which may still route them (its own link may work, or it takes over)"

// haKeepReplied is why an HA node leaves a down link's answered flows in
// place, having deleted the rest.
const haKeepReplied = "ha: those that saw a reply; conntrackd would delete them on the peer too, which may still route them (its own link may work, or it takes over)"

// flushDown deletes unit u's flows as fp says. With ha, only those that
// never saw a reply: a deletion here is synced to the peer, and a master
// that loses a link (or dies, its links going first) would take the
// link's established flows with it, flows the peer was about to carry
// on. A connection attempt the link's death left unanswered is another
// matter: kept, its client's retries (SYN retransmits) would follow its
// pin to the dead link until the client gives up; deleted, the next one
// is classified again onto a live link. The peer loses nothing with it.
func (d *Daemon) flushDown(l config.Link, u unit, fp keep.Plan) {
	if d.Config.HA {
		n, err := d.deps.Conntrack.FlushUnreplied(l.Mark, d.Config.MarkMask, u.af(), fp.Keep)
		if err != nil {
			d.Log.Error("delete the link's unanswered flows", "link", l.Name, "family", u.family(), "err", err)
		} else if n > 0 {
			d.Log.Info("deleted the link's flows that never saw a reply, so their retries go by a live link", "link", l.Name, "family", u.family(), "flows", n, "mark", fmt.Sprintf("%#x/%#x", l.Mark, d.Config.MarkMask))
		}
		d.keepFlows(l, u, haKeepReplied)
		return
	}
	k := unitKey(l.Name, u.v6)
	if len(fp.Mixed) > 0 {
		d.Log.Info("the flows of policies with no live link go with the link's: no label tells them apart (failback: flush gives a policy one)",
			"link", l.Name, "family", u.family(), "policies", strings.Join(fp.Mixed, ", "))
	}
	if len(fp.Keep) == 0 {
		d.keep.Unkeep(k)
		d.flushFlows(l, u)
		return
	}
	n, err := d.deps.Conntrack.FlushMarkExceptLabels(l.Mark, d.Config.MarkMask, u.af(), fp.Keep)
	if err != nil {
		d.Log.Error("flush the link's conntrack entries", "link", l.Name, "family", u.family(), "err", err)
		return
	}
	d.Log.Info("flushed the link's flows", "link", l.Name, "family", u.family(), "flows", n, "mark", fmt.Sprintf("%#x/%#x", l.Mark, d.Config.MarkMask))
	d.keepFlows(l, u, fp.Kept)
}

// keepFlows leaves unit u's flows (or some of them) in place, says so
// once, and shows it in status until the unit is up again or they go.
func (d *Daemon) keepFlows(l config.Link, u unit, why string) {
	if d.keep.Keep(unitKey(l.Name, u.v6), why, d.deps.Clock.Now()) {
		d.Log.Warn("link down; its flows stay in place: deleting them would only break them", "link", l.Name, "family", u.family(), "why", why)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// usable says whether unit u could carry traffic in the plan last
// applied (its interface, address and gateway there); true before any.
func (d *Daemon) usable(u unit) bool { return d.usableIn(d.applied, u) }

// usableIn is usable by the plan applied: the loop's own (d.applied), or,
// off the loop, the one it last published (d.appliedPub).
func (d *Daemon) usableIn(applied *plan.Desired, u unit) bool {
	if applied == nil || u.link >= len(applied.Links) || applied.Links[u.link].Name != d.Config.Links[u.link].Name {
		return true
	}
	if u.v6 {
		return applied.Links[u.link].V6.Usable
	}
	return applied.Links[u.link].Usable
}
