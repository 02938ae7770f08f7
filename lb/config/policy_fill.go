package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxRoutedMarks is how many policies (but default) and sticky rules a
// config may have: each takes one ip rule that routes its mark by its
// table, and the rule layout has room for 98 of them, priority_base+302
// to priority_base+399 (the rule of policy main and of the flows from
// before apply sits at +301; the 98th shares +399 with the prefixes6
// rules, lb/plan.OffPrefix).
const MaxRoutedMarks = 98

// Sticky limits: under a second a source would be forgotten between the
// connections of one page load; over a day an entry outlives any login it
// is there to protect.
const (
	MinSticky = time.Second
	MaxSticky = 24 * time.Hour
)

// marks counts what the policies and rules take of the mark space as
// they are filled, so that the first one too many is named.
type marks struct {
	values int // mark values under the mask
	links  int
	routed int // policies but default, sticky rules
	bypass bool
}

func (c *Config) takeMarks(m *marks, field string, routed int, bypass bool) error {
	m.routed += routed
	if m.routed > MaxRoutedMarks {
		return c.FieldError(field, "%d policies and sticky rules up to here; flowpin's ip rule layout has room for %d", m.routed, MaxRoutedMarks)
	}
	m.bypass = m.bypass || bypass
	need := m.links + m.routed
	if m.bypass {
		need++
	}
	if need > m.values {
		what := "policies and sticky rules"
		if m.bypass {
			what = "policies, sticky rules and policy main"
		}
		return c.FieldError(field, "mark_mask %#x has %d mark values; the %d links and the %s up to here need %d", c.MarkMask, m.values, m.links, what, need)
	}
	return nil
}

// fillPolicies takes policies, rules and default_policy, after the links.
func (c *Config) fillPolicies(raw *rawConfig) error {
	m := &marks{values: len(AllMaskValues(c.MarkMask)), links: len(c.Links)}
	vars := hookVars{PolicyEnvName(DefaultPolicy): {name: DefaultPolicy}}
	for k := range raw.Policies {
		p, err := c.fillPolicy(k, &raw.Policies[k])
		if err != nil {
			return err
		}
		if err := c.claimHookVar(vars, fmt.Sprintf("policies[%d].name", k), p.Name); err != nil {
			return err
		}
		c.Policies = append(c.Policies, p)
		if err := c.takeMarks(m, fmt.Sprintf("policies[%d]", k), 1, false); err != nil {
			return err
		}
	}
	names := map[string]int{}
	for i := range raw.Rules {
		r, err := c.fillRule(i, &raw.Rules[i], names)
		if err != nil {
			return err
		}
		routed, bypass := 0, r.Bypass()
		if !bypass {
			var added bool
			r.Target, added = c.target(r.Policy)
			if added {
				routed++
				if err := c.claimHookVar(vars, fmt.Sprintf("rules[%d].policy", i), r.Policy); err != nil {
					return err
				}
			}
		}
		if r.Sticky > 0 {
			routed++
		}
		if err := c.checkRuleFamilies(i, r); err != nil {
			return err
		}
		c.Rules = append(c.Rules, r)
		if err := c.takeMarks(m, fmt.Sprintf("rules[%d]", i), routed, bypass); err != nil {
			return err
		}
	}
	return c.fillUnmatched(raw.DefaultPolicy, m, vars)
}

// hookVars maps each policy's hook variable (PolicyEnvName) to where the
// policy comes from: the field that named it first ("" for the built-in
// default) and its name.
type hookVars map[string]struct{ field, name string }

// claimHookVar refuses a policy whose hook variable another policy already
// has: a hook would read one policy's tier and could not tell which.
func (c *Config) claimHookVar(vars hookVars, field, name string) error {
	env := PolicyEnvName(name)
	prev, taken := vars[env]
	if !taken {
		vars[env] = struct{ field, name string }{field, name}
		return nil
	}
	other := "the built-in policy " + quote(prev.name)
	if prev.field != "" {
		other = fmt.Sprintf("%s (%s, line %d)", quote(prev.name), prev.field, c.lines.line(prev.field))
	}
	return c.FieldError(field, "%s and %s both give the on_change hook the variable %s: rename one", quote(name), other, env)
}

// target is the index in c.Policies of the policy named name, known to
// be a policy, a link or default. A link gets its one-link policy on its
// first mention; added says it was added now.
func (c *Config) target(name string) (k int, added bool) {
	if k, ok := c.PolicyByName(name); ok {
		return k, false
	}
	i, _ := c.LinkByName(name)
	c.Policies = append(c.Policies, Policy{Name: name, Tiers: [][]int{{i}}, LastResort: Unreachable, Failback: Keep, Implicit: true})
	return len(c.Policies) - 1, true
}

// checkPolicyRef says why name is not something a rule or default_policy
// can send flows to: a policy, a link, default (or main, when mainOK).
func (c *Config) checkPolicyRef(field, name string, mainOK bool) error {
	if name == "" {
		if mainOK {
			return c.FieldError(field, "missing: every rule needs a policy (a policy, a link, %s or %s)", DefaultPolicy, BypassPolicy)
		}
		return nil
	}
	if name == BypassPolicy && !mainOK {
		return c.FieldError(field, "%s cannot be the policy of unmatched flows: name a policy, a link or %s (a rule with policy %s bypasses flowpin)", quote(name), DefaultPolicy, BypassPolicy)
	}
	if name == BypassPolicy || name == DefaultPolicy {
		return nil
	}
	if _, ok := c.PolicyByName(name); ok {
		return nil
	}
	if _, ok := c.LinkByName(name); ok {
		return nil
	}
	known := map[string]fieldInfo{}
	for _, p := range c.Policies {
		if !p.Implicit {
			known[p.Name] = fieldInfo{}
		}
	}
	for _, l := range c.Links {
		known[l.Name] = fieldInfo{}
	}
	msg := fmt.Sprintf("%s is neither a policy nor a link", quote(name))
	if near := nearest(name, known); near != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", near)
	}
	return c.FieldError(field, "%s", msg)
}

func (c *Config) fillUnmatched(name string, m *marks, vars hookVars) error {
	if err := c.checkPolicyRef("default_policy", name, false); err != nil {
		return err
	}
	if name == "" {
		return nil
	}
	k, added := c.target(name)
	c.Unmatched = k
	if !added {
		return nil
	}
	if err := c.claimHookVar(vars, "default_policy", name); err != nil {
		return err
	}
	return c.takeMarks(m, "default_policy", 1, false)
}

func (c *Config) fillPolicy(k int, rp *rawPolicy) (Policy, error) {
	at := func(field string) string {
		if field == "" {
			return fmt.Sprintf("policies[%d]", k)
		}
		return fmt.Sprintf("policies[%d].%s", k, field)
	}
	p := Policy{Name: rp.Name, LastResort: Unreachable, Failback: Keep}
	switch {
	case p.Name == "":
		return p, c.FieldError(at("name"), "missing: every policy needs a unique name")
	case !validName(p.Name):
		return p, c.FieldError(at("name"), "%s: use letters, digits, '-', '_' and '.' (at most 32)", quote(p.Name))
	case p.Name == DefaultPolicy || p.Name == BypassPolicy:
		return p, c.FieldError(at("name"), "%s is built in (%s: every link by tier and weight; %s: the main table): choose another name", quote(p.Name), DefaultPolicy, BypassPolicy)
	}
	if j, dup := c.PolicyByName(p.Name); dup {
		return p, c.FieldError(at("name"), "duplicate policy name %s (also policies[%d])", quote(p.Name), j-1)
	}
	if i, clash := c.LinkByName(p.Name); clash {
		return p, c.FieldError(at("name"), "%s is the name of links[%d]: a rule's policy names a policy or a link, so they must differ", quote(p.Name), i)
	}
	if len(rp.Tiers) == 0 {
		return p, c.FieldError(at("tiers"), "missing: a list of tiers, each a list of links (like [[fiber], [lte]])")
	}
	seen := map[string]int{}
	for t, tier := range rp.Tiers {
		if len(tier) == 0 {
			return p, c.FieldError(at(fmt.Sprintf("tiers[%d]", t)), "empty tier: each tier lists one link or more")
		}
		var idx []int
		for j, name := range tier {
			f := at(fmt.Sprintf("tiers[%d][%d]", t, j))
			i, ok := c.LinkByName(name)
			if !ok {
				return p, c.FieldError(f, "%s is not a link", quote(name))
			}
			if prev, dup := seen[name]; dup {
				return p, c.FieldError(f, "link %s is already in tiers[%d]: a link is in one tier of a policy at most", quote(name), prev)
			}
			seen[name] = t
			idx = append(idx, i)
		}
		p.Tiers = append(p.Tiers, idx)
	}
	switch LastResort(rp.LastResort) {
	case "":
	case Unreachable, Blackhole, LastMain:
		p.LastResort = LastResort(rp.LastResort)
	default:
		return p, c.FieldError(at("last_resort"), "%s is not unreachable, blackhole or main", quote(rp.LastResort))
	}
	switch Failback(rp.Failback) {
	case "":
	case Keep, Flush:
		p.Failback = Failback(rp.Failback)
	default:
		return p, c.FieldError(at("failback"), "%s is not keep or flush", quote(rp.Failback))
	}
	return p, nil
}

// fillRule takes rule i's own settings; names holds the rules' names so
// far. Target is left for the caller.
func (c *Config) fillRule(i int, rr *rawRule, names map[string]int) (Rule, error) {
	at := func(field string) string { return fmt.Sprintf("rules[%d].%s", i, field) }
	r := Rule{Name: rr.Name, IIF: rr.IIF, Policy: rr.Policy}
	switch {
	case r.Name == "":
		return r, c.FieldError(at("name"), "missing: every rule needs a unique name (status and metrics show it)")
	case !validName(r.Name):
		return r, c.FieldError(at("name"), "%s: use letters, digits, '-', '_' and '.' (at most 32)", quote(r.Name))
	}
	if j, dup := names[r.Name]; dup {
		return r, c.FieldError(at("name"), "duplicate rule name %s (also rules[%d])", quote(r.Name), j)
	}
	names[r.Name] = i
	switch Proto(rr.Proto) {
	case "", "any":
	case TCP, UDP, ICMP:
		r.Proto = Proto(rr.Proto)
	default:
		return r, c.FieldError(at("proto"), "%s is not tcp, udp, icmp or any", quote(rr.Proto))
	}
	var err error
	if r.Src, err = c.prefixes(at("src"), rr.Src); err != nil {
		return r, err
	}
	if r.Dst, err = c.prefixes(at("dst"), rr.Dst); err != nil {
		return r, err
	}
	if fs, fd := families(r.Src), families(r.Dst); fs != 0 && fd != 0 && fs&fd == 0 {
		return r, c.FieldError(at("dst"), "only %s addresses, and src only %s: no flow matches both", familyName(fd), familyName(fs))
	}
	for _, ref := range []struct{ field, name string }{{"src_set", rr.SrcSet}, {"dst_set", rr.DstSet}} {
		if ref.name != "" {
			if err := c.checkSetRef(at(ref.field), ref.name); err != nil {
				return r, err
			}
		}
	}
	r.SrcSet, r.DstSet = rr.SrcSet, rr.DstSet
	if r.SrcPorts, err = c.ports(at("src_ports"), rr.SrcPorts, r.Proto); err != nil {
		return r, err
	}
	if r.DstPorts, err = c.ports(at("dst_ports"), rr.DstPorts, r.Proto); err != nil {
		return r, err
	}
	if r.IIF != "" {
		if !validInterface(r.IIF) {
			return r, c.FieldError(at("iif"), "%s is not a valid interface name", quote(r.IIF))
		}
		for j, l := range c.Links {
			if l.Interface == r.IIF {
				// Flows that arrive on a link are pinned to it before any
				// rule is looked at: replies must leave the way they came.
				return r, c.FieldError(at("iif"), "%s is the interface of links[%d] (%s): flows arriving on a link stay on it, so the rule would never match", quote(r.IIF), j, l.Name)
			}
		}
	}
	if err := c.checkPolicyRef(at("policy"), r.Policy, true); err != nil {
		return r, err
	}
	if r.Policy == BypassPolicy {
		r.Target = -1
	}
	if rr.Sticky != nil {
		if r.Bypass() {
			return r, c.FieldError(at("sticky"), "a rule with policy %s is never pinned to a link, so it cannot be sticky", BypassPolicy)
		}
		if v := *rr.Sticky; v < MinSticky || v > MaxSticky {
			return r, c.FieldError(at("sticky"), "%v is out of range (1s..24h)", v)
		}
		r.Sticky = *rr.Sticky
	}
	return r, nil
}

// prefixes parses a rule's src or dst: addresses or CIDRs of either
// family.
func (c *Config) prefixes(field string, raw []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for j, s := range raw {
		f := fmt.Sprintf("%s[%d]", field, j)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, c.FieldError(f, "%s is not an address or a CIDR (like 10.9.0.0/24 or 2001:db8::/48)", quote(s))
			}
			if m := p.Masked(); m != p {
				return nil, c.FieldError(f, "%s has bits set past the prefix length: did you mean %s?", quote(s), m)
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, c.FieldError(f, "%s is not an address or a CIDR (like 10.9.0.0/24 or 2001:db8::/48)", quote(s))
			}
			if a.Zone() != "" {
				return nil, c.FieldError(f, "%s: a rule's address cannot carry a zone (use iif for the interface)", quote(s))
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			// An IPv4 packet never carries one: it would match nothing.
			return nil, c.FieldError(f, "%s is an IPv4-mapped IPv6 address, which no packet carries: write the IPv4 address", quote(s))
		}
		out = append(out, p)
	}
	return out, nil
}

// checkRuleFamilies: a rule whose addresses are of one family only must
// send its flows to a policy with a link of that family, or none of them
// could leave by the policy's links.
func (c *Config) checkRuleFamilies(i int, r Rule) error {
	if r.Bypass() {
		return nil
	}
	fr := 3
	for _, f := range []int{families(r.Src), families(r.Dst)} {
		if f != 0 {
			fr &= f
		}
	}
	fp := 0
	for _, tier := range c.Policies[r.Target].Tiers {
		for _, li := range tier {
			if c.Links[li].HasV4() {
				fp |= 1
			}
			if c.Links[li].HasV6() {
				fp |= 2
			}
		}
	}
	if fr&fp != 0 {
		return nil
	}
	gw := "gateway"
	if fr == 2 {
		gw = "gateway6"
	}
	return c.FieldError(fmt.Sprintf("rules[%d].policy", i), "%s has no link with %s (%s), and the rule matches only %s flows", quote(r.Policy), familyName(fr), gw, familyName(fr))
}

// families is 1 for IPv4, 2 for IPv6, or both, of prefixes; 0 for none.
func families(ps []netip.Prefix) int {
	f := 0
	for _, p := range ps {
		if p.Addr().Is4() {
			f |= 1
		} else {
			f |= 2
		}
	}
	return f
}

func familyName(f int) string {
	if f == 1 {
		return "IPv4"
	}
	return "IPv6"
}

// ports parses port numbers and "low-high" ranges; only tcp and udp have
// ports.
func (c *Config) ports(field string, raw []string, proto Proto) ([]PortRange, error) {
	if len(raw) > 0 && proto != TCP && proto != UDP {
		what := "any"
		if proto != AnyProto {
			what = string(proto)
		}
		return nil, c.FieldError(field, "ports need proto tcp or udp (this rule has proto %s)", what)
	}
	var out []PortRange
	for j, s := range raw {
		f := fmt.Sprintf("%s[%d]", field, j)
		loS, hiS, isRange := strings.Cut(s, "-")
		lo, err := port(loS)
		hi := lo
		if err == nil && isRange {
			hi, err = port(hiS)
		}
		if err != nil {
			return nil, c.FieldError(f, "%s is not a port (1..65535) or a range of them (like \"10000-20000\")", quote(s))
		}
		if hi < lo {
			return nil, c.FieldError(f, "%s: high %d is below low %d", quote(s), hi, lo)
		}
		out = append(out, PortRange{Lo: lo, Hi: hi})
	}
	return out, nil
}

func port(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err == nil && n == 0 {
		err = strconv.ErrRange
	}
	return uint16(n), err
}
