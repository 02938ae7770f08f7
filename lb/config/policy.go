package config

import (
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Policy is an ordered list of tiers of links: new flows of the policy go
// to the first tier that has a link up, spread by the links' weights.
type Policy struct {
	Name string
	// Tiers holds indexes into Config.Links.
	Tiers      [][]int
	LastResort LastResort
	Failback   Failback
	// Implicit: the built-in `default` policy (every link by its tier), or
	// the one-link policy a rule that names a link gets.
	Implicit bool
}

// HasFamily says whether any link of the policy has that family (IPv6 if
// v6): a policy of IPv4-only links has no IPv6 tier to follow.
func (p Policy) HasFamily(links []Link, v6 bool) bool {
	for _, tier := range p.Tiers {
		for _, i := range tier {
			if v6 && links[i].HasV6() || !v6 && links[i].HasV4() {
				return true
			}
		}
	}
	return false
}

// LastResort is what a policy's new flows get when no link of any tier is
// up.
type LastResort string

// Last resorts.
const (
	// Unreachable: the sender gets ICMP unreachable at once.
	Unreachable LastResort = "unreachable"
	// Blackhole: packets are dropped silently.
	Blackhole LastResort = "blackhole"
	// LastMain: the main table routes them (its own default route).
	LastMain LastResort = "main"
)

// Failback is what happens to a policy's flows on a lower tier when a
// higher tier comes back.
type Failback string

// Failbacks.
const (
	// Keep: they stay where they are until they end.
	Keep Failback = "keep"
	// Flush: they are deleted from conntrack and re-establish on the
	// active tier.
	Flush Failback = "flush"
)

// Names with a meaning of their own where a rule names its policy.
const (
	// DefaultPolicy is every link, by tier and weight.
	DefaultPolicy = "default"
	// BypassPolicy routes by the main table and never pins the flow.
	BypassPolicy = "main"
)

// PolicyEnvName is the variable a hook reads a policy's active tier
// from: FLOWPIN_POLICY_<NAME>_TIER (IPv4; with a 6 appended for IPv6),
// the name upper-cased with every character that is not an ASCII letter
// or digit replaced by '_'. Distinct names can give one variable
// ("cable-first", "cable_first"); the config refuses that.
func PolicyEnvName(policy string) string {
	var b strings.Builder
	for _, c := range policy {
		if c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c)) {
			b.WriteRune(unicode.ToUpper(c))
		} else {
			b.WriteByte('_')
		}
	}
	return "FLOWPIN_POLICY_" + b.String() + "_TIER"
}

// Proto is a rule's protocol selector.
type Proto string

// Protocols. AnyProto matches every protocol.
const (
	AnyProto Proto = ""
	TCP      Proto = "tcp"
	UDP      Proto = "udp"
	ICMP     Proto = "icmp"
)

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// Rule decides the policy of new flows it matches; the first matching
// rule wins. Empty selectors match everything.
type Rule struct {
	Name     string
	Proto    Proto
	Src, Dst []netip.Prefix
	SrcPorts []PortRange
	DstPorts []PortRange
	// IIF: the interface the flow arrived on. The router's own traffic
	// has none, so a rule with iif never matches it.
	IIF string
	// Policy as written: a policy's name, a link's name, default or main.
	Policy string
	// Target is the index in Config.Policies of the policy the rule
	// sends flows to, or -1 for main (bypass).
	Target int
	Sticky time.Duration
	// SrcSet, DstSet: the source or destination is in the named set.
	SrcSet, DstSet string
}

// Bypass says whether the rule routes by main without pinning.
func (r Rule) Bypass() bool { return r.Target < 0 }

// PolicyByName returns the index of the named policy in c.Policies.
func (c *Config) PolicyByName(name string) (int, bool) {
	i := slices.IndexFunc(c.Policies, func(p Policy) bool { return p.Name == name })
	return i, i >= 0
}

// LinkByName returns the index of the named link in c.Links.
func (c *Config) LinkByName(name string) (int, bool) {
	i := slices.IndexFunc(c.Links, func(l Link) bool { return l.Name == name })
	return i, i >= 0
}

// DefaultTiers groups every link by its tier, lowest tier first.
func DefaultTiers(links []Link) [][]int {
	var tiers []int
	for _, l := range links {
		if !slices.Contains(tiers, l.Tier) {
			tiers = append(tiers, l.Tier)
		}
	}
	slices.Sort(tiers)
	out := make([][]int, len(tiers))
	for i, l := range links {
		k := slices.Index(tiers, l.Tier)
		out[k] = append(out[k], i)
	}
	return out
}
