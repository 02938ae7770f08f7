// Package failback is the daemon's failback part: it follows each
// policy's active tier, per address family, as the syncs apply them, and
// says which of a policy's flows go when a higher tier is back (failback:
// flush). It owns the tiers last seen and the policies as last applied;
// the daemon's loop feeds it each applied plan and does the flushing.
package failback

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/plan"
)

// Tiers follows the policies' active tiers. Policies is read from other
// goroutines (status, hooks), hence the lock.
type Tiers struct {
	// active is each policy's active tier by family as last applied
	// (-1: none); owned by the loop.
	active map[string]int

	mu       sync.Mutex
	policies []plan.PolicyPlan
}

// New returns a Tiers that has seen no policy yet.
func New() *Tiers { return &Tiers{active: map[string]int{}} }

// Step is what one policy's family did in an applied plan, in the order
// the daemon acts on them.
type Step struct {
	Policy, Family string
	// Started: the first plan with this policy's family; To is its tier.
	// Otherwise the tier changed From To.
	Started  bool
	From, To int
	// Flushes are the policy's flows to delete: failback to a live tier
	// of a policy with failback: flush.
	Flushes []Flush
}

// Flush is a policy's flows of one family on one link of a lower tier,
// told apart by the policy's ct label bit.
type Flush struct {
	Link  string
	Mark  uint32
	Label int   // the ct label bit
	AF    uint8 // unix.AF_INET or AF_INET6
}

// Applied takes the plan a sync applied: open[v6] says whether the route
// of that family failed open (every link judged down), whose tier then
// means nothing. It returns what changed, in policy order, IPv4 first.
// With failback: keep, a policy's flows stay until they end.
func (t *Tiers) Applied(des *plan.Desired, links []config.Link, open [2]bool) []Step {
	t.mu.Lock()
	t.policies = des.Policies
	t.mu.Unlock()
	var out []Step
	for _, p := range des.Policies {
		for _, v6 := range []bool{false, true} {
			if !p.HasFamily(links, v6) {
				continue
			}
			active, family, af := p.Active, "ipv4", uint8(unix.AF_INET)
			if v6 {
				active, family, af = p.Active6, "ipv6", unix.AF_INET6
			}
			if open[b2i(v6)] {
				// Every link of the family is judged down and the route
				// failed open: the tier it shows has no live link, so
				// there is nothing to fail back to, and the last live
				// tier is kept for when a link is back.
				continue
			}
			key := p.Name
			if v6 {
				key += "/ipv6"
			}
			old, seen := t.active[key]
			t.active[key] = active
			if !seen {
				out = append(out, Step{Policy: p.Name, Family: family, Started: true, To: active})
				continue
			}
			if active == old {
				continue
			}
			s := Step{Policy: p.Name, Family: family, From: old, To: active}
			// Only towards a live tier: with active < 0 no link of the
			// policy is up, and its flows stay where they are.
			if active >= 0 && (old < 0 || active <= old) && p.Failback == config.Flush && p.Label != 0 {
				for _, i := range p.LowerLinks(v6) {
					l := des.Links[i]
					s.Flushes = append(s.Flushes, Flush{Link: l.Name, Mark: l.Mark, Label: p.Label - 1, AF: af})
				}
			}
			out = append(out, s)
		}
	}
	return out
}

// Policies are the policies as last applied, with their active tiers.
func (t *Tiers) Policies() []plan.PolicyPlan {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.policies
}

// TierName is a tier for the log: 1-based, or the last resort.
func TierName(t int) string {
	if t < 0 {
		return "none (last resort)"
	}
	return fmt.Sprintf("tier %d", t+1)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
