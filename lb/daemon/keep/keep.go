// Package keep decides the fate of a down link's flows: deleted where
// another link can take them, else kept in place; and whether a family's
// route fails open because every one of its links is judged down. It owns
// which links' flows wait to be settled, when each last failed, which
// were kept (read by the daemon's Health, hence the lock) and whether
// each family failed open. The daemon's loop tells it of state changes
// and failed rounds, and carries out what Settle decides.
package keep

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"flowpin/lb/config"
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

// Kept is a unit (a link's family) whose flows were left in place when
// it went down, since when and why.
type Kept struct {
	Since time.Time
	Why   string
}

// Unit is one address family of one link, by its key.
type Unit struct {
	Key  string
	Link int // index in the config's links
	V6   bool
}

// Flows follows the flows of the units that went down.
type Flows struct {
	// Owned by the loop. flush: units whose flows go once a sync took
	// them out and another link can take them; failedAt: when each
	// unit's last failed round began; open[v6]: whether that family's
	// route failed open.
	flush    map[string]bool
	failedAt map[string]time.Time
	open     [2]bool

	mu   sync.Mutex
	kept map[string]Kept
}

// New returns a Flows with nothing pending.
func New() *Flows {
	return &Flows{flush: map[string]bool{}, failedAt: map[string]time.Time{}, kept: map[string]Kept{}}
}

// Down: unit k went down; its flows are settled once a sync took it out.
func (f *Flows) Down(k string) { f.flush[k] = true }

// Up: unit k is up again; its flows, if kept, go on there.
func (f *Flows) Up(k string) {
	delete(f.flush, k)
	f.Unkeep(k)
}

// Failed records when unit k's last failed probe round began (or when it
// was taken down at once).
func (f *Flows) Failed(k string, at time.Time) { f.failedAt[k] = at }

// FailedAt is when unit k's last failed round began (zero: never).
func (f *Flows) FailedAt(k string) time.Time { return f.failedAt[k] }

// Open says of each family (index 1: IPv6) whether its route failed open.
func (f *Flows) Open() [2]bool { return f.open }

// FailOpen is the down set of a family (IPv6 with v6) to plan with: the
// links the checks took down (down, of n units of the family), or none
// when no link of the family is up. changed says whether the family
// failed open, or stopped failing open, now.
func (f *Flows) FailOpen(v6 bool, down map[string]string, n int) (planned map[string]string, changed bool) {
	i := b2i(v6)
	open := n > 0 && len(down) == n
	changed = open != f.open[i]
	f.open[i] = open
	if open {
		return nil, changed
	}
	return down, changed
}

// Decision is what happens to a unit's flows now: Flush as Plan says, or
// kept in place for Why.
type Decision struct {
	Unit  Unit
	Flush bool
	Plan  Plan
	Why   string
}

// Settle decides, for each unit that went down and is out of the route
// as last applied (des), what happens to its flows: deleted where another
// link can take them (takers judges the other links for a unit), else
// left in place for now. A unit whose flows are deleted is settled; one
// whose flows are kept is decided again next time.
func (f *Flows) Settle(c *config.Config, des *plan.Desired, units []Unit, takers func(Unit) Takers) []Decision {
	if des == nil || len(f.flush) == 0 {
		return nil
	}
	var out []Decision
	for _, u := range units {
		if !f.flush[u.Key] {
			continue
		}
		l := des.Links[u.Link]
		if l.InRoute && !u.V6 || l.V6.InRoute && u.V6 {
			if f.open[b2i(u.V6)] {
				fam := FamilyLabel(u.V6)
				out = append(out, Decision{Unit: u, Why: fmt.Sprintf("no other %s link is up to take them (every %s link is judged down, and all stay in the route)", fam, fam)})
			}
			continue
		}
		fp := PlanFlush(c, des, u.Link, u.V6, takers(u))
		if !fp.Flush {
			out = append(out, Decision{Unit: u, Why: fp.Kept})
			continue
		}
		delete(f.flush, u.Key)
		out = append(out, Decision{Unit: u, Flush: true, Plan: fp})
	}
	return out
}

// Keep records that unit k's flows (or some of them) stay in place, for
// why, from now on; say tells whether that is news (to say once).
func (f *Flows) Keep(k, why string, now time.Time) (say bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, was := f.kept[k]
	if !was {
		old.Since = now
	}
	f.kept[k] = Kept{Since: old.Since, Why: why}
	return !was || old.Why != why
}

// Unkeep forgets that unit k's flows were kept: it is up again, and they
// go on there (or they were deleted after all).
func (f *Flows) Unkeep(k string) {
	f.mu.Lock()
	delete(f.kept, k)
	f.mu.Unlock()
}

// Kept says whether unit k's flows are kept, since when and why.
func (f *Flows) Kept(k string) (Kept, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kf, ok := f.kept[k]
	return kf, ok
}

// Clone is a copy, for the daemon of a reload; only once the loop that
// owned f has ended.
func (f *Flows) Clone() *Flows {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &Flows{flush: maps.Clone(f.flush), failedAt: maps.Clone(f.failedAt), open: f.open, kept: maps.Clone(f.kept)}
}

// Inherit takes over what prev had pending for unit k.
func (f *Flows) Inherit(prev *Flows, k string) {
	if prev.flush[k] {
		f.flush[k] = true
	}
	if at, ok := prev.failedAt[k]; ok {
		f.failedAt[k] = at
	}
	if kf, ok := prev.Kept(k); ok {
		f.mu.Lock()
		f.kept[k] = kf
		f.mu.Unlock()
	}
}

// InheritOpen takes over whether each family's route failed open, so a
// reload does not say it again.
func (f *Flows) InheritOpen(prev *Flows) { f.open = prev.open }

// Plan is what to do with one link's flows of one family.
type Plan struct {
	// Flush: delete the link's flows, but those carrying one of the Keep
	// label bits keep (the flows of policies with no live link, told
	// apart by their failback label).
	Flush bool
	Keep  []int
	// Kept says whose flows stay and why (for the log and status); empty
	// when none do.
	Kept string
	// Mixed names the policies with no live link whose flows go with the
	// rest: no label tells them apart from those that can move.
	Mixed []string
}

// Takers says of link j whether it is in the route of the family (live)
// and whether it can take another link's flows now (ready: it answers,
// and has since before the other one last failed).
type Takers func(j int) (live, ready bool)

// PlanFlush decides for link i's flows of one family (IPv6 with v6). Only
// the policies that get flows count: the one of unmatched flows and those
// rules name.
func PlanFlush(c *config.Config, des *plan.Desired, i int, v6 bool, can Takers) Plan {
	fam := FamilyLabel(v6)
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
	none := Plan{Kept: fmt.Sprintf("no other %s link is up to take them", fam)}
	wait := Plan{Kept: fmt.Sprintf("the other %s links' probes fail too", fam)}
	if len(movable)+len(waiting)+len(stuck) == 0 {
		// No policy sends new flows to it (they came from `flowpin use`,
		// or an older config): any link will do.
		switch {
		case anyReady:
			return Plan{Flush: true}
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
		return Plan{Kept: fmt.Sprintf("no other link of %s %s is up in %s to take them", policyWord(len(stuck)), names(stuck), fam)}
	}
	fp := Plan{Flush: true}
	var kept []plan.PolicyPlan
	for _, p := range stuck {
		if p.Label > 0 {
			fp.Keep = append(fp.Keep, p.Label-1)
			kept = append(kept, p)
		} else {
			fp.Mixed = append(fp.Mixed, p.Name)
		}
	}
	if len(kept) > 0 {
		their := "its"
		if len(kept) > 1 {
			their = "their"
		}
		fp.Kept = fmt.Sprintf("those of %s %s: none of %s other links is up in %s", policyWord(len(kept)), names(kept), their, fam)
	}
	return fp
}

func routesTo(p config.Policy, i int) bool {
	return slices.ContainsFunc(p.Tiers, func(t []int) bool { return slices.Contains(t, i) })
}

// other: whether a link of tiers other than i is live, and one ready.
func other(tiers [][]int, i int, can Takers) (live, ready bool) {
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

// FamilyLabel is an address family for a person.
func FamilyLabel(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
