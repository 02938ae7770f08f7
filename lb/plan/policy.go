package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"flowpin/lb/config"
	"flowpin/nft"
	"flowpin/rules"
)

// OffPolicy is where the policies' fwmark rules start, between main's
// connected routes (OffMain) and the source rules: a flow its traffic
// rule sent to a policy is routed by that policy's table.
//
//	B+301      fwmark MAIN lookup main        (rules with policy: main, and
//	                                          flows from before apply)
//	B+302+k    fwmark M_k lookup T_k          (policies, sticky rules)
const OffPolicy = OffMain + 1

// The config refuses more policies and sticky rules than fit between
// OffPolicy+1 and OffSkipSource.
var _ = [1]struct{}{}[OffSkipSource-OffPolicy-1-config.MaxRoutedMarks]

// PolicyPlan is one policy as planned.
type PolicyPlan struct {
	config.Policy
	// Table holds its route: the active tier's links, weighted, or the
	// last resort. The default policy's is the balance table.
	Table int
	// Mark routes a new flow by Table; 0 for the default policy, which
	// the catch-all rule routes.
	Mark uint32
	// Active is the index of the first tier with a link up; -1: none,
	// the last resort applies. Active6 is the same for IPv6.
	Active  int
	Active6 int
	// Label, if set, is 1 + the ct label bit on the policy's flows, for
	// failback: flush.
	Label int
}

// ActiveLinks are the links of the active tier that take new flows.
func (p PolicyPlan) ActiveLinks(links []LinkPlan) []int {
	if p.Active < 0 {
		return nil
	}
	var out []int
	for _, i := range p.Tiers[p.Active] {
		if links[i].InRoute {
			out = append(out, i)
		}
	}
	return out
}

// ActiveLinks6 are the links of the IPv6 active tier that take new flows.
func (p PolicyPlan) ActiveLinks6(links []LinkPlan) []int {
	if p.Active6 < 0 {
		return nil
	}
	var out []int
	for _, i := range p.Tiers[p.Active6] {
		if links[i].V6.InRoute {
			out = append(out, i)
		}
	}
	return out
}

// LowerLinks are the links of the tiers below the active one of a family
// (each family has its own active tier).
func (p PolicyPlan) LowerLinks(v6 bool) []int {
	active := p.Active
	if v6 {
		active = p.Active6
	}
	if active < 0 {
		return nil
	}
	var out []int
	for _, t := range p.Tiers[active+1:] {
		out = append(out, t...)
	}
	return out
}

// RulePlan is one traffic rule as planned.
type RulePlan struct {
	config.Rule
	// Mark is what its flows' first packet carries: the policy's mark,
	// or the rule's own for a sticky rule (so postrouting knows to record
	// the source), or the bypass mark.
	Mark uint32
}

// Marks are the mark values and tables the policies and traffic rules
// take. They depend on the config alone.
type Marks struct {
	// Policies, in config order, with Mark, Table and Label set and no
	// active tier (-1).
	Policies []PolicyPlan
	// Bypass is the ct mark of flows routed by main (0: no such rule).
	Bypass uint32
	// Main is the mark that routes a packet by main: the bypass mark, or
	// without rules with policy main the last value the others left (0:
	// none left). It carries the packets of flows from before apply.
	Main uint32
	// Rules: the mark of each traffic rule's new flows.
	Rules []uint32
}

// Allocate hands out marks from the top of the mask down (links take
// theirs from the bottom) and tables after the links'.
func Allocate(c *config.Config) (*Marks, error) {
	usedMark := map[uint32]bool{}
	usedTable := map[int]bool{c.BalanceTable: true}
	for _, l := range c.Links {
		usedMark[l.Mark] = true
		usedTable[l.Table] = true
	}
	values := config.AllMaskValues(c.MarkMask)
	next := len(values) - 1
	takeMark := func(what string) (uint32, error) {
		for ; next >= 0; next-- {
			if v := values[next]; !usedMark[v] {
				usedMark[v] = true
				next--
				return v, nil
			}
		}
		return 0, c.FieldError("mark_mask", "%#x has no mark value left for %s (%d values, %d links)", c.MarkMask, what, len(values), len(c.Links))
	}
	nextTable := c.BalanceTable + 1
	takeTable := func() (int, error) {
		for ; nextTable <= 0xffffffff; nextTable++ {
			if !usedTable[nextTable] && config.CheckTableID(int64(nextTable)) == nil {
				usedTable[nextTable] = true
				return nextTable, nil
			}
		}
		return 0, c.FieldError("balance_table", "no free routing table id above %d", c.BalanceTable)
	}
	m := &Marks{}
	if slices.ContainsFunc(c.Rules, func(r config.Rule) bool { return r.Bypass() }) {
		v, err := takeMark("rules that bypass to main")
		if err != nil {
			return nil, err
		}
		m.Bypass = v
	}
	labels := 0
	for k, p := range c.Policies {
		pp := PolicyPlan{Policy: p, Table: c.BalanceTable, Active: -1, Active6: -1}
		if k > 0 {
			var err error
			if pp.Mark, err = takeMark("policy " + p.Name); err != nil {
				return nil, err
			}
			if pp.Table, err = takeTable(); err != nil {
				return nil, err
			}
		}
		if p.Failback == config.Flush {
			if labels == 128 {
				return nil, c.FieldError(fmt.Sprintf("policies[%d].failback", k), "more than 128 policies with failback: flush")
			}
			labels++
			pp.Label = labels
		}
		m.Policies = append(m.Policies, pp)
	}
	for _, r := range c.Rules {
		switch {
		case r.Bypass():
			m.Rules = append(m.Rules, m.Bypass)
		case r.Sticky > 0:
			v, err := takeMark("sticky rule " + r.Name)
			if err != nil {
				return nil, err
			}
			m.Rules = append(m.Rules, v)
		default:
			m.Rules = append(m.Rules, m.Policies[r.Target].Mark)
		}
	}
	// Taken last, so that it moves no policy's or rule's mark; with none
	// left, flows from before apply follow the balance route, as new ones.
	m.Main = m.Bypass
	if m.Main == 0 {
		m.Main, _ = takeMark("flows from before apply")
	}
	return m, nil
}

// policies plans the policies and the traffic rules: their marks and
// tables, the active tier of each, and the nft classification.
func policies(c *config.Config, d *Desired) error {
	m, err := Allocate(c)
	if err != nil {
		return err
	}
	d.NFT.Bypass, d.NFT.Main = m.Bypass, m.Main
	if m.Main == 0 {
		d.Warnings = append(d.Warnings, fmt.Sprintf("mark_mask %#x has no value left to route flows from before apply by main: until pinned they take the multipath route, which may move them to another link", c.MarkMask))
	}
	for _, pp := range m.Policies {
		for t, tier := range pp.Tiers {
			if slices.ContainsFunc(tier, func(i int) bool { return d.Links[i].InRoute }) {
				pp.Active = t
				break
			}
		}
		for t, tier := range pp.Tiers {
			if slices.ContainsFunc(tier, func(i int) bool { return d.Links[i].V6.InRoute }) {
				pp.Active6 = t
				break
			}
		}
		d.Policies = append(d.Policies, pp)
	}
	for i, r := range c.Rules {
		rp := RulePlan{Rule: r, Mark: m.Rules[i]}
		cl := nft.Class{Name: r.Name, Proto: string(r.Proto), Src: r.Src, Dst: r.Dst, IIF: r.IIF, SrcSet: r.SrcSet, DstSet: r.DstSet}
		for _, pr := range r.SrcPorts {
			cl.SrcPorts = append(cl.SrcPorts, nft.PortRange{Lo: pr.Lo, Hi: pr.Hi})
		}
		for _, pr := range r.DstPorts {
			cl.DstPorts = append(cl.DstPorts, nft.PortRange{Lo: pr.Lo, Hi: pr.Hi})
		}
		switch {
		case r.Bypass():
			cl.Action = nft.Action{Mark: rp.Mark, CtMark: rp.Mark}
		case r.Sticky > 0:
			p := d.Policies[r.Target]
			cl.Action = nft.Action{Mark: rp.Mark, Label: p.Label}
			cl.Sticky = r.Sticky
			// A source sticks only to a link of the active tier that is
			// up: entries for any other link go with its set.
			for _, li := range p.ActiveLinks(d.Links) {
				cl.StickyLinks = append(cl.StickyLinks, c.Links[li].Name)
			}
			for _, li := range p.ActiveLinks6(d.Links) {
				cl.StickyLinks6 = append(cl.StickyLinks6, c.Links[li].Name)
			}
		default:
			cl.Action = nft.Action{Mark: rp.Mark, Label: d.Policies[r.Target].Label}
		}
		d.Rules = append(d.Rules, rp)
		d.NFT.Classes = append(d.NFT.Classes, cl)
	}
	d.NFT.Sets = namedSets(c)
	// apply compares a file set's elements with the kernel's and writes
	// them again if someone changed them: verify's fix is apply. The
	// daemon narrows this to the sets a notification names.
	d.NFT.Recheck = d.NFT.FileSets()
	if n := d.NFT.ClassElements(); n > nft.MaxClassElements {
		return c.FieldError("rules", "the rules expand to %d set elements (every source x destination x port range of a rule), more than %d", n, nft.MaxClassElements)
	}
	if u := d.Policies[c.Unmatched]; u.Mark != 0 || u.Label != 0 {
		d.NFT.Unmatched = nft.Action{Mark: u.Mark, Label: u.Label}
	}
	return nil
}

// policyRouting adds the policies' rules and routes of family fam to s.
func policyRouting(c *config.Config, d *Desired, s *rules.State, fam int) {
	base := c.PriorityBase
	all := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	active, gw := PolicyPlan.ActiveLinks, LinkPlan.Via
	if fam == rules.V6 {
		all = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		active, gw = PolicyPlan.ActiveLinks6, LinkPlan.Leg6
	}
	if d.NFT.Main != 0 {
		s.Rules = append(s.Rules, rules.Rule{Family: fam, Priority: base + OffPolicy, Mark: d.NFT.Main, Mask: c.MarkMask, Table: MainTable, SuppressPrefixlen: -1})
	}
	prio := base + OffPolicy + 1
	for _, p := range d.Policies {
		if p.Mark != 0 {
			s.Rules = append(s.Rules, rules.Rule{Family: fam, Priority: prio, Mark: p.Mark, Mask: c.MarkMask, Table: p.Table, SuppressPrefixlen: -1})
			prio++
		}
		var nhs []rules.Nexthop
		for _, i := range active(p, d.Links) {
			l := d.Links[i]
			nhs = append(nhs, rules.Nexthop{Dev: l.Interface, Gw: gw(l), Weight: l.Weight})
		}
		switch {
		case len(nhs) == 1:
			// The kernel stores a one-nexthop multipath route as a plain
			// one; plan it that way so a re-apply sees no difference.
			l := d.Links[active(p, d.Links)[0]]
			via := l.Via()
			if fam == rules.V6 {
				via = l.Via6() // a lone route may be device-only in IPv6 too
			}
			s.Routes = append(s.Routes, rules.Route{Family: fam, Table: p.Table, Dst: all, Gw: via, Dev: nhs[0].Dev})
		case len(nhs) > 1:
			s.Routes = append(s.Routes, rules.Route{Family: fam, Table: p.Table, Dst: all, Nexthops: nhs})
		case p.LastResort == config.Unreachable || p.LastResort == config.Blackhole:
			// No link of any tier is up: senders get an ICMP unreachable
			// at once, or nothing; never a link that is down.
			s.Routes = append(s.Routes, rules.Route{Family: fam, Table: p.Table, Dst: all, Type: string(p.LastResort)})
		}
		// LastMain: the table stays empty and lookup goes on to main.
	}
	for _, r := range d.Rules {
		if r.Sticky > 0 {
			s.Rules = append(s.Rules, rules.Rule{Family: fam, Priority: prio, Mark: r.Mark, Mask: c.MarkMask, Table: d.Policies[r.Target].Table, SuppressPrefixlen: -1})
			prio++
		}
	}
}
