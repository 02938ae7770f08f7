package status

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/nft"
)

// PolicyStatus is one policy as the kernel routes it now.
type PolicyStatus struct {
	Name  string     `json:"name"`
	Tiers [][]string `json:"tiers"`
	// ActiveTier is the tier its new flows take (1 is the first); 0 when
	// no link of any tier is up and LastResort applies.
	ActiveTier  int      `json:"active_tier"`
	ActiveLinks []string `json:"active_links"`
	// ActiveTier6 and ActiveLinks6 are the same for IPv6, which follows
	// the links' IPv6 health; absent when no link of the policy has IPv6.
	ActiveTier6  *int     `json:"active_tier6,omitempty"`
	ActiveLinks6 []string `json:"active_links6,omitempty"`
	LastResort   string   `json:"last_resort"`
	Failback     string   `json:"failback"`
	// Implicit: the built-in default policy, or the one-link policy of a
	// rule that names a link.
	Implicit bool `json:"implicit,omitempty"`
}

// RuleStatus is one traffic rule and how many new flows it classified
// (the nft counter of its chain).
type RuleStatus struct {
	Name   string `json:"name"`
	Policy string `json:"policy"`
	Sticky string `json:"sticky,omitempty"`
	Hits   uint64 `json:"hits"`
	// HitBytes: bytes of the classified packets (each flow's first).
	HitBytes uint64 `json:"hit_bytes"`
}

// HitReader reads the traffic rules' counters.
type HitReader interface {
	RuleHits() (map[string]nft.Hits, error)
}

// PolicyTable reads each policy's state from what was applied: the route
// in its table names the links of its active tier, or its last resort.
func PolicyTable(c *config.Config, a *Applied) ([]PolicyStatus, error) {
	m, err := plan.Allocate(c)
	if err != nil {
		return nil, err
	}
	var out []PolicyStatus
	for _, p := range m.Policies {
		ps := PolicyStatus{Name: p.Name, LastResort: string(p.LastResort), Failback: string(p.Failback), Implicit: p.Implicit}
		for _, tier := range p.Tiers {
			var names []string
			for _, i := range tier {
				names = append(names, c.Links[i].Name)
			}
			ps.Tiers = append(ps.Tiers, names)
		}
		ps.ActiveTier, ps.ActiveLinks = activeTier(c, a, p, false)
		if p.HasFamily(c.Links, true) {
			t, links := activeTier(c, a, p, true)
			ps.ActiveTier6, ps.ActiveLinks6 = &t, links
		}
		out = append(out, ps)
	}
	return out, nil
}

// activeTier reads a policy's active tier in one family from the default
// route in its table: the first tier with a link among the route's
// devices, and those links.
func activeTier(c *config.Config, a *Applied, p plan.PolicyPlan, v6 bool) (int, []string) {
	var devs []string
	for _, r := range a.Routes {
		if r.Table != p.Table || r.Dst.Bits() != 0 || r.Dst.Addr().Is6() != v6 || r.Type != "" {
			continue
		}
		if r.Dev != "" {
			devs = append(devs, r.Dev)
		}
		for _, nh := range r.Nexthops {
			devs = append(devs, nh.Dev)
		}
	}
	active, links := 0, []string{}
	for t, tier := range p.Tiers {
		for _, i := range tier {
			if !slices.Contains(devs, c.Links[i].Interface) {
				continue
			}
			if active == 0 {
				active = t + 1
			}
			if active == t+1 {
				links = append(links, c.Links[i].Name)
			}
		}
	}
	return active, links
}

// tierText is an active tier and its links as the table shows them.
func tierText(tier int, links []string) (string, string) {
	if tier == 0 {
		return "none", "-"
	}
	return fmt.Sprintf("tier %d", tier), strings.Join(links, " ")
}

// RuleTable lists the traffic rules with their hits.
func RuleTable(c *config.Config, hits map[string]nft.Hits) []RuleStatus {
	out := []RuleStatus{}
	for _, r := range c.Rules {
		rs := RuleStatus{Name: r.Name, Policy: r.Policy, Hits: hits[r.Name].Packets, HitBytes: hits[r.Name].Bytes}
		if r.Sticky > 0 {
			rs.Sticky = r.Sticky.String()
		}
		out = append(out, rs)
	}
	return out
}

// AddPolicies fills s's policies and rules.
// Nothing is added for a config of links alone, all in one tier.
func AddPolicies(s *Status, c *config.Config, a *Applied, h HitReader) error {
	if len(c.Policies) <= 1 && len(c.Rules) == 0 && !slices.ContainsFunc(c.Links, func(l config.Link) bool { return l.Tier != 1 }) {
		return nil
	}
	ps, err := PolicyTable(c, a)
	if err != nil {
		return err
	}
	hits, err := h.RuleHits()
	if err != nil {
		return err
	}
	s.Policies, s.Rules = ps, RuleTable(c, hits)
	return nil
}

// WritePolicies renders the policies and rules under the links.
func WritePolicies(w io.Writer, s *Status) error {
	if len(s.Policies) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tTIERS\tACTIVE\tLINKS\tLAST RESORT\tFAILBACK")
	for _, p := range s.Policies {
		var tiers []string
		for _, t := range p.Tiers {
			tiers = append(tiers, "["+strings.Join(t, " ")+"]")
		}
		active, links := tierText(p.ActiveTier, p.ActiveLinks)
		if p.ActiveTier6 != nil && (*p.ActiveTier6 != p.ActiveTier || !slices.Equal(p.ActiveLinks6, p.ActiveLinks)) {
			a6, l6 := tierText(*p.ActiveTier6, p.ActiveLinks6)
			active, links = active+", IPv6 "+a6, links+", IPv6 "+l6
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", Printable(p.Name), Printable(strings.Join(tiers, " ")), active, Printable(links), p.LastResort, p.Failback)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Rules) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tPOLICY\tSTICKY\tNEW FLOWS")
	for _, r := range s.Rules {
		sticky := r.Sticky
		if sticky == "" {
			sticky = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", Printable(r.Name), Printable(r.Policy), sticky, r.Hits)
	}
	return tw.Flush()
}
