package daemon

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

// Deleting a down link's flows breaks their connections so that they open
// again elsewhere: worth it only where another link can take them. When
// the probe target itself stops answering, every link is judged down
// while all of them still carry traffic; deleting the flows then would
// break every established connection for nothing.
//
// So a down link's flows of one family are deleted only once, in the
// policies that route to it, another link of that family is up and
// answering its probes, and the down link failed a probe round that began
// after that link was up. The links of a common failure (the target)
// never go down in the same instant, but within about one probe interval
// of each other: while the other links' last rounds fail too, the flows
// wait; if those links go down as well, the flows stay, and go on when the
// links are back. Flows that stayed are deleted later only if their link
// keeps failing while another one works.

// When every link of a family is judged down, the route fails open: the
// links stay in it as if up. Taking them all out would leave the last
// resort (an unreachable route in the balance table), and with it not only
// every new flow unreachable but the established ones broken too, however
// well the links carry them: the kernel's reverse-path filter (rp_filter,
// loose, as flowpin sets it on the WANs and distributions default to) looks
// up the source of each reply arriving from a WAN, the lookup falls to the
// balance table, and an unreachable route there fails it, so the reply is
// dropped (fib_validate_source in net/ipv4/fib_frontend.c). The judgement
// is then the likelier failure: a probe target that stopped answering
// looks the same on every link. Flows of links that are truly dead fail as
// they would have; a link that comes back up ends it. As load balancers
// do when every backend fails its checks (Envoy's panic threshold, AWS's
// "fail open").

// failOpen is the down set of a family (IPv6 with v6) to plan with: the
// links the checks took down, or none when no link of the family is up.
func (d *Daemon) failOpen(v6 bool) map[string]string {
	down := d.downSet(v6)
	i := b2i(v6)
	n := 0
	for _, u := range d.units {
		if u.v6 == v6 {
			n++
		}
	}
	open := n > 0 && len(down) == n
	if open != d.open[i] {
		d.open[i] = open
		if open {
			d.Log.Warn("every link of the family is judged down: they all stay in the route (a failure they share, such as the probe target's, must not cut off every flow)", "family", familyLabel(v6))
		} else {
			d.Log.Info("a link of the family is up again: the links judged down leave the route", "family", familyLabel(v6))
		}
	}
	if open {
		return nil
	}
	return down
}

// keptFlows is a unit (a link's family) whose flows were left in place
// when it went down, and why. Read under mu by Health.
type keptFlows struct {
	since time.Time
	why   string
}

// flushPlan is what to do with one link's flows of one family.
type flushPlan struct {
	// flush: delete the link's flows, but those carrying one of the label
	// bits keep (the flows of policies with no live link, told apart by
	// their failback label).
	flush bool
	keep  []int
	// kept says whose flows stay and why (for the log and status); empty
	// when none do.
	kept string
	// mixed names the policies with no live link whose flows go with the
	// rest: no label tells them apart from those that can move.
	mixed []string
}

// takers says of link j whether it is in the route of the family (live)
// and whether it can take another link's flows now (ready: it answers,
// and has since before the other one last failed).
type takers func(j int) (live, ready bool)

// planFlush decides for link i's flows of one family (IPv6 with v6). Only
// the policies that get flows count: the one of unmatched flows and those
// rules name.
func planFlush(c *config.Config, des *plan.Desired, i int, v6 bool, can takers) flushPlan {
	fam := familyLabel(v6)
	used := map[int]bool{c.Unmatched: true}
	for _, r := range c.Rules {
		used[r.Target] = true
	}
	// Each policy that routes to i: some other link of it ready to take
	// the flows (movable), only live ones that fail their probes too
	// (waiting), or none live (stuck).
	var movable, waiting, stuck []plan.PolicyPlan
	for k, p := range des.Policies {
		if !used[k] || !routesTo(p.Policy, i) || !p.HasFamily(c.Links, v6) {
			continue
		}
		switch live, ready := other(p.Tiers, i, can); {
		case ready:
			movable = append(movable, p)
		case live:
			waiting = append(waiting, p)
		default:
			stuck = append(stuck, p)
		}
	}
	all := make([]int, len(des.Links))
	for j := range all {
		all[j] = j
	}
	anyLive, anyReady := other([][]int{all}, i, can)
	none := flushPlan{kept: fmt.Sprintf("no other %s link is up to take them", fam)}
	wait := flushPlan{kept: fmt.Sprintf("the other %s links' probes fail too", fam)}
	if len(movable)+len(waiting)+len(stuck) == 0 {
		// No policy sends new flows to it (they came from `flowpin use`,
		// or an older config): any link will do.
		switch {
		case anyReady:
			return flushPlan{flush: true}
		case anyLive:
			return wait
		}
		return none
	}
	switch {
	case len(waiting) > 0:
		return wait
	case len(movable) == 0 && !anyLive:
		return none
	case len(movable) == 0:
		return flushPlan{kept: fmt.Sprintf("no other link of %s %s is up in %s to take them", policyWord(len(stuck)), names(stuck), fam)}
	}
	fp := flushPlan{flush: true}
	var kept []plan.PolicyPlan
	for _, p := range stuck {
		if p.Label > 0 {
			fp.keep = append(fp.keep, p.Label-1)
			kept = append(kept, p)
		} else {
			fp.mixed = append(fp.mixed, p.Name)
		}
	}
	if len(kept) > 0 {
		their := "its"
		if len(kept) > 1 {
			their = "their"
		}
		fp.kept = fmt.Sprintf("those of %s %s: none of %s other links is up in %s", policyWord(len(kept)), names(kept), their, fam)
	}
	return fp
}

func routesTo(p config.Policy, i int) bool {
	return slices.ContainsFunc(p.Tiers, func(t []int) bool { return slices.Contains(t, i) })
}

// other: whether a link of tiers other than i is live, and one ready.
func other(tiers [][]int, i int, can takers) (live, ready bool) {
	for _, t := range tiers {
		for _, j := range t {
			if j == i {
				continue
			}
			l, r := can(j)
			live, ready = live || l, ready || r
		}
	}
	return live, ready
}

func names(ps []plan.PolicyPlan) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return strings.Join(out, ", ")
}

func policyWord(n int) string {
	if n == 1 {
		return "policy"
	}
	return "policies"
}

func familyLabel(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// settleFlows decides, for each unit that is down and out of the route
// as last applied, what happens to its flows: deleted where another link
// can take them (keep.go's header), else left in place for now. Called on
// the loop's goroutine after each sync and each probe round.
func (d *Daemon) settleFlows() {
	des := d.applied
	if des == nil || len(d.flush) == 0 {
		return
	}
	for _, u := range d.units {
		l := des.Links[u.link]
		k := unitKey(l.Name, u.v6)
		if !d.flush[k] {
			continue
		}
		if l.InRoute && !u.v6 || l.V6.InRoute && u.v6 {
			if d.open[b2i(u.v6)] {
				d.keepFlows(l.Link, u, fmt.Sprintf("no other %s link is up to take them (every %s link is judged down, and all stay in the route)", familyLabel(u.v6), familyLabel(u.v6)))
			}
			continue
		}
		fp := planFlush(d.Config, des, u.link, u.v6, d.takersFor(u))
		if !fp.flush {
			d.keepFlows(l.Link, u, fp.kept)
			continue
		}
		delete(d.flush, k)
		d.flushDown(l.Link, u, fp)
	}
}

// takersFor judges the other links as takers of unit u's flows: live in
// u's family as last applied, and ready when up, answering, and up since
// before u's last failed round began (so a link that came back with u's
// own recovery under way, as after the probe target's outage, does not
// count yet).
func (d *Daemon) takersFor(u unit) takers {
	name := d.Config.Links[u.link].Name
	failed := d.failedAt[unitKey(name, u.v6)]
	ready := make([]bool, len(d.Config.Links))
	d.mu.Lock()
	// A link that answers again is coming back: its flows may be fine.
	answering := false
	if self := d.trackers[unitKey(name, u.v6)]; self != nil {
		good, _ := self.Streaks()
		answering = good > 0
	}
	for j, l := range d.Config.Links {
		t := d.trackers[unitKey(l.Name, u.v6)]
		if answering || t == nil || t.State != health.StateUp {
			continue
		}
		_, bad := t.Streaks()
		ready[j] = bad == 0 && t.LastChange.Before(failed)
	}
	d.mu.Unlock()
	return func(j int) (bool, bool) {
		lp := d.applied.Links[j]
		live := lp.InRoute && !u.v6 || lp.V6.InRoute && u.v6
		return live, live && ready[j]
	}
}

// flushDown deletes unit u's flows as fp says.
func (d *Daemon) flushDown(l config.Link, u unit, fp flushPlan) {
	k := unitKey(l.Name, u.v6)
	if len(fp.mixed) > 0 {
		d.Log.Info("the flows of policies with no live link go with the link's: no label tells them apart (failback: flush gives a policy one)",
			"link", l.Name, "family", u.family(), "policies", strings.Join(fp.mixed, ", "))
	}
	if len(fp.keep) == 0 {
		d.unkeep(k)
		d.flushFlows(l, u)
		return
	}
	n, err := d.deps.Conntrack.FlushMarkExceptLabels(l.Mark, d.Config.MarkMask, u.af(), fp.keep)
	if err != nil {
		d.Log.Error("flush the link's conntrack entries", "link", l.Name, "family", u.family(), "err", err)
		return
	}
	d.Log.Info("flushed the link's flows", "link", l.Name, "family", u.family(), "flows", n, "mark", fmt.Sprintf("%#x/%#x", l.Mark, d.Config.MarkMask))
	d.keepFlows(l, u, fp.kept)
}

// keepFlows leaves unit u's flows (or some of them) in place, says so
// once, and shows it in status until the unit is up again or they go.
func (d *Daemon) keepFlows(l config.Link, u unit, why string) {
	k := unitKey(l.Name, u.v6)
	d.mu.Lock()
	old, was := d.kept[k]
	if !was {
		old.since = d.deps.Clock.Now()
	}
	d.kept[k] = keptFlows{since: old.since, why: why}
	d.mu.Unlock()
	if !was || old.why != why {
		d.Log.Warn("link down; its flows stay in place: deleting them would only break them", "link", l.Name, "family", u.family(), "why", why)
	}
}

// unkeep forgets that unit k's flows were kept: it is up again, and they
// go on there (or they were deleted after all).
func (d *Daemon) unkeep(k string) {
	d.mu.Lock()
	delete(d.kept, k)
	d.mu.Unlock()
}

// failed records when unit k's last failed probe round began (or when it
// was taken down at once), for takersFor.
func (d *Daemon) failed(k string, at time.Time) {
	d.failedAt[k] = at
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
