package plan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"flowpin/lb/config"
	"flowpin/nft"
	"flowpin/rules"
)

// links3 are three IPv4 links a, b, c on wan1..wan3 (192.0.2.x/24 ...).
const links3 = `links:
  - {name: a, interface: wan1, gateway: 192.0.2.1}
  - {name: b, interface: wan2, gateway: 198.51.100.1}
  - {name: c, interface: wan3, gateway: 203.0.113.1}
`

func links3Ifaces() map[string]rules.Iface {
	return ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.2/24"), iface("wan3", true, "203.0.113.2/24"))
}

// marksText is Marks as "name mark table label" per policy, then the
// bypass mark and each rule's mark.
func marksText(m *Marks) []string {
	var out []string
	for _, p := range m.Policies {
		s := fmt.Sprintf("%s %#x %d", p.Name, p.Mark, p.Table)
		if p.Label > 0 {
			s += fmt.Sprintf(" label %d", p.Label)
		}
		if p.Implicit {
			s += " implicit"
		}
		if p.Active != -1 || p.Active6 != -1 {
			s += fmt.Sprintf(" active %d/%d", p.Active, p.Active6)
		}
		out = append(out, s)
	}
	if m.Bypass != 0 {
		out = append(out, fmt.Sprintf("bypass %#x", m.Bypass))
	}
	for i, r := range m.Rules {
		out = append(out, fmt.Sprintf("rule %d %#x", i, r))
	}
	return out
}

// TestAllocate: the mark space at its limits. Policies, sticky rules and
// the bypass take marks from the top of the mask down, skipping the
// links' (which take theirs from the bottom, or where the config puts
// them); tables come after balance_table, skipping the links' and the
// kernel's reserved ids.
func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		// mutate changes the parsed config to reach what the config's own
		// checks refuse: Allocate must still say no.
		mutate func(c *config.Config)
		want   []string
		err    string
	}{
		{
			name:   "the default policy alone takes no mark",
			config: links3,
			want:   []string{"default 0x0 100 implicit"},
		},
		{
			name:   "policy marks from the top of the mask, tables after the links'",
			config: links3 + "policies:\n  - {name: p, tiers: [[a], [b]]}\n  - {name: q, tiers: [[c]], failback: flush}\nrules:\n  - {name: r1, policy: p}\n  - {name: r2, policy: q}\n",
			want:   []string{"default 0x0 100 implicit", "p 0xff00 104", "q 0xfe00 105 label 1", "rule 0 0xff00", "rule 1 0xfe00"},
		},
		{
			name:   "bypass first, then policies in order, then sticky rules in order",
			config: links3 + "policies:\n  - {name: p, tiers: [[a, b]]}\nrules:\n  - {name: s1, policy: p, sticky: 1m}\n  - {name: vpn, dst: [10.8.0.0/16], policy: main}\n  - {name: plain, policy: p}\n  - {name: s2, policy: default, sticky: 1h}\n  - {name: vpn2, dst: [10.9.0.0/16], policy: main}\n",
			want:   []string{"default 0x0 100 implicit", "p 0xfe00 104", "bypass 0xff00", "rule 0 0xfd00", "rule 1 0xff00", "rule 2 0xfe00", "rule 3 0xfc00", "rule 4 0xff00"},
		},
		{
			name:   "a rule naming a link gets that link's one-link policy, once",
			config: links3 + "rules:\n  - {name: r1, policy: b}\n  - {name: r2, policy: a}\n  - {name: r3, policy: b}\n",
			want:   []string{"default 0x0 100 implicit", "b 0xff00 104 implicit", "a 0xfe00 105 implicit", "rule 0 0xff00", "rule 1 0xfe00", "rule 2 0xff00"},
		},
		{
			name:   "a mask of two bits: three values, links from the bottom, the policy takes the last",
			config: "mark_mask: 0x3\n" + links3[:strings.Index(links3, "  - {name: c")] + "policies:\n  - {name: p, tiers: [[a], [b]]}\n",
			want:   []string{"default 0x0 100 implicit", "p 0x3 103"},
		},
		{
			name:   "policy marks from the top collide with links' marks set at the top: they are skipped",
			config: "mark_mask: 0x7\nlinks:\n  - {name: a, interface: wan1, gateway: 192.0.2.1, mark: 7}\n  - {name: b, interface: wan2, gateway: 198.51.100.1, mark: 5}\n  - {name: c, interface: wan3, gateway: 203.0.113.1}\npolicies:\n  - {name: p, tiers: [[a]]}\n  - {name: q, tiers: [[b]]}\nrules:\n  - {name: s, policy: c, sticky: 1m}\n",
			// Values 1..7; the links hold 7, 5 and 3 (c, third by position).
			// From the top: 6, 4, 2 for c's one-link policy, 1 for the
			// sticky rule: every value is used.
			want: []string{"default 0x0 100 implicit", "p 0x6 104", "q 0x4 105", "c 0x2 106 implicit", "rule 0 0x1"},
		},
		{
			name:   "every mark used",
			config: "mark_mask: 0x3\nlinks:\n  - {name: a, interface: wan1, gateway: 192.0.2.1}\npolicies:\n  - {name: p, tiers: [[a]]}\nrules:\n  - {name: s, policy: p, sticky: 1m}\n",
			want:   []string{"default 0x0 100 implicit", "p 0x3 102", "rule 0 0x2"},
		},
		{
			name:   "a mask that does not start at bit 0, wider than the values the config may use",
			config: "mark_mask: 0xffff0000\n" + links3 + "policies:\n  - {name: p, tiers: [[a]]}\n",
			// AllMaskValues stops at 4096 values: the top is 4096<<16.
			want: []string{"default 0x0 100 implicit", "p 0x10000000 104"},
		},
		{
			name:   "policy tables skip the kernel's reserved ids",
			config: "balance_table: 250\nlinks:\n  - {name: a, interface: wan1, gateway: 192.0.2.1}\npolicies:\n  - {name: p, tiers: [[a]]}\n  - {name: q, tiers: [[a]]}\n",
			want:   []string{"default 0x0 250 implicit", "p 0xff00 256", "q 0xfe00 257"},
		},
		{
			name:   "no mark left: the config's count is bypassed by a narrower mask",
			config: links3 + "policies:\n  - {name: p, tiers: [[a]]}\n",
			mutate: func(c *config.Config) { c.MarkMask = 0x300 },
			err:    "f.yaml:1: mark_mask: 0x300 has no mark value left for policy p (3 values, 3 links)",
		},
		{
			name:   "no mark left for the bypass",
			config: links3 + "rules:\n  - {name: vpn, dst: [10.8.0.0/16], policy: main}\n",
			mutate: func(c *config.Config) { c.MarkMask = 0x300 },
			err:    "f.yaml:1: mark_mask: 0x300 has no mark value left for rules that bypass to main (3 values, 3 links)",
		},
		{
			name:   "no mark left for a sticky rule",
			config: links3 + "rules:\n  - {name: s, policy: default, sticky: 1m}\n",
			mutate: func(c *config.Config) { c.MarkMask = 0x300 },
			err:    "f.yaml:1: mark_mask: 0x300 has no mark value left for sticky rule s (3 values, 3 links)",
		},
		{
			name:   "no table id left above balance_table",
			config: "links:\n  - {name: a, interface: wan1, gateway: 192.0.2.1, table: 7}\npolicies:\n  - {name: p, tiers: [[a]]}\n",
			mutate: func(c *config.Config) { c.BalanceTable = 0xffffffff },
			err:    "f.yaml:1: balance_table: no free routing table id above 4294967295",
		},
		{
			name:   "the last table id is taken",
			config: "links:\n  - {name: a, interface: wan1, gateway: 192.0.2.1, table: 7}\npolicies:\n  - {name: p, tiers: [[a]]}\n  - {name: q, tiers: [[a]]}\n",
			mutate: func(c *config.Config) { c.BalanceTable = 0xfffffffe },
			err:    "f.yaml:1: balance_table: no free routing table id above 4294967294",
		},
		{
			name:   "more than 128 policies with failback: flush",
			config: "mark_mask: 0xffff0000\n" + links3 + "policies:\n  - {name: p, tiers: [[a]], failback: flush}\n",
			mutate: func(c *config.Config) {
				for len(c.Policies) < 130 {
					c.Policies = append(c.Policies, c.Policies[1])
				}
			},
			err: "f.yaml:6: policies[129].failback: more than 128 policies with failback: flush",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.config)
			if tc.mutate != nil {
				tc.mutate(c)
			}
			m, err := Allocate(c)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, marksText(m)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// No mark twice, none outside the mask, none a link's.
			seen := map[uint32]string{}
			for _, l := range c.Links {
				seen[l.Mark] = "link " + l.Name
			}
			take := func(what string, v uint32) {
				if v&^c.MarkMask != 0 {
					t.Errorf("%s: mark %#x outside the mask %#x", what, v, c.MarkMask)
				}
				if prev, ok := seen[v]; ok {
					t.Errorf("%s: mark %#x is %s's", what, v, prev)
				}
				seen[v] = what
			}
			for _, p := range m.Policies[1:] {
				take("policy "+p.Name, p.Mark)
			}
			if m.Bypass != 0 {
				take("bypass", m.Bypass)
			}
			for i, r := range c.Rules {
				if r.Sticky > 0 {
					take("sticky rule "+r.Name, m.Rules[i])
				}
			}
		})
	}
}

// policyView is what a test checks of a planned policy: its active tier
// per family, the links of its lower tiers, and the routes of its table.
func policyView(d *Desired) []string {
	var out []string
	for _, p := range d.Policies {
		s := fmt.Sprintf("%s active %d/%d lower %v/%v", p.Name, p.Active, p.Active6, p.LowerLinks(false), p.LowerLinks(true))
		for _, r := range d.Routing.Routes {
			if r.Table == p.Table && r.Dst.Bits() == 0 {
				s += " | " + r.Spec()
			}
		}
		out = append(out, s)
	}
	return out
}

// dual3 are three dual-stack links: IPv4 as links3, IPv6 2001:db8:<i>::/64
// with a global gateway (a), a link-local one (b, as router
// advertisements give) and auto (c, from main's IPv6 default route).
const dual3 = `links:
  - {name: a, interface: wan1, gateway: 192.0.2.1, gateway6: '2001:db8:1::1'}
  - {name: b, interface: wan2, gateway: 198.51.100.1, gateway6: 'fe80::1'}
  - {name: c, interface: wan3, gateway: auto, gateway6: auto}
`

func dual3Ifaces() map[string]rules.Iface {
	w3 := iface("wan3", true, "203.0.113.2/24", "2001:db8:3::2/64", "fe80::2/64")
	w3.Gateways = []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("fe80::1")}
	return ifaces(iface("wan1", true, "192.0.2.2/24", "2001:db8:1::2/64"), iface("wan2", true, "198.51.100.2/24", "2001:db8:2::2/64"), w3)
}

// TestPlanPolicies: each policy's active tier, per family, from the
// links' state, and what its table routes: the active tier's links, or
// its last resort. IPv4-only, IPv6-only and dual-stack links.
func TestPlanPolicies(t *testing.T) {
	tiers := "policies:\n  - {name: p, tiers: [[a], [b, c]]}\n  - {name: m, tiers: [[c]], last_resort: main}\n  - {name: h, tiers: [[b]], last_resort: blackhole}\nrules:\n  - {name: r1, policy: p}\n  - {name: r2, policy: m}\n  - {name: r3, policy: h}\n"
	for _, tc := range []struct {
		name   string
		config string
		ifaces map[string]rules.Iface
		opts   Options
		want   []string
		warn   []string
	}{
		{
			name:   "IPv4 only, every link up: the first tier",
			config: links3 + tiers,
			ifaces: links3Ifaces(),
			want: []string{
				"default active 0/-1 lower []/[] | default table 100 proto 201 nexthop via 192.0.2.1 dev wan1 weight 1 nexthop via 198.51.100.1 dev wan2 weight 1 nexthop via 203.0.113.1 dev wan3 weight 1",
				"p active 0/-1 lower [1 2]/[] | default via 192.0.2.1 dev wan1 table 104 proto 201",
				"m active 0/-1 lower []/[] | default via 203.0.113.1 dev wan3 table 105 proto 201",
				"h active 0/-1 lower []/[] | default via 198.51.100.1 dev wan2 table 106 proto 201",
			},
		},
		{
			name:   "IPv4 only, a down by the health checks: p fails over to its second tier, both links",
			config: links3 + tiers,
			ifaces: links3Ifaces(),
			opts:   Options{Down: map[string]string{"a": "probes lost"}},
			want: []string{
				"default active 0/-1 lower []/[] | default table 100 proto 201 nexthop via 198.51.100.1 dev wan2 weight 1 nexthop via 203.0.113.1 dev wan3 weight 1",
				"p active 1/-1 lower []/[] | default table 104 proto 201 nexthop via 198.51.100.1 dev wan2 weight 1 nexthop via 203.0.113.1 dev wan3 weight 1",
				"m active 0/-1 lower []/[] | default via 203.0.113.1 dev wan3 table 105 proto 201",
				"h active 0/-1 lower []/[] | default via 198.51.100.1 dev wan2 table 106 proto 201",
			},
		},
		{
			name:   "IPv4 only, every link down: the last resorts (main leaves the table empty)",
			config: links3 + tiers,
			ifaces: links3Ifaces(),
			opts:   Options{Down: map[string]string{"a": "x", "b": "x", "c": "x"}},
			want: []string{
				"default active -1/-1 lower []/[] | unreachable default table 100 proto 201",
				"p active -1/-1 lower []/[] | unreachable default table 104 proto 201",
				"m active -1/-1 lower []/[]",
				"h active -1/-1 lower []/[] | blackhole default table 106 proto 201",
			},
		},
		{
			name:   "IPv6 only: IPv6 tiers, no IPv4 route",
			config: "links:\n  - {name: a, interface: wan1, gateway6: '2001:db8:1::1'}\n  - {name: b, interface: wan2, gateway6: 'fe80::1'}\n  - {name: c, interface: wan3, gateway6: '2001:db8:3::1'}\n" + tiers,
			ifaces: ifaces(iface("wan1", true, "2001:db8:1::2/64"), iface("wan2", false, "2001:db8:2::2/64"), iface("wan3", true, "2001:db8:3::2/64")),
			opts:   Options{Down6: map[string]string{"a": "probes lost"}},
			want: []string{
				"default active -1/0 lower []/[] | default via 2001:db8:3::1 dev wan3 table 100 proto 201",
				"p active -1/1 lower []/[] | default via 2001:db8:3::1 dev wan3 table 104 proto 201",
				"m active -1/0 lower []/[] | default via 2001:db8:3::1 dev wan3 table 105 proto 201",
				"h active -1/-1 lower []/[] | blackhole default table 106 proto 201",
			},
			warn: []string{"link b left out of the IPv6 multipath route: interface wan2 is down"},
		},
		{
			name:   "dual stack: a's IPv6 down while its IPv4 is up moves only p's IPv6",
			config: dual3 + tiers,
			ifaces: dual3Ifaces(),
			opts:   Options{Down6: map[string]string{"a": "probes lost"}},
			want: []string{
				"default active 0/0 lower []/[] | default table 100 proto 201 nexthop via 192.0.2.1 dev wan1 weight 1 nexthop via 198.51.100.1 dev wan2 weight 1 nexthop via 203.0.113.1 dev wan3 weight 1 | default table 100 proto 201 nexthop via fe80::1 dev wan2 weight 1 nexthop via fe80::1 dev wan3 weight 1",
				"p active 0/1 lower [1 2]/[] | default via 192.0.2.1 dev wan1 table 104 proto 201 | default table 104 proto 201 nexthop via fe80::1 dev wan2 weight 1 nexthop via fe80::1 dev wan3 weight 1",
				"m active 0/0 lower []/[] | default via 203.0.113.1 dev wan3 table 105 proto 201 | default via fe80::1 dev wan3 table 105 proto 201",
				"h active 0/0 lower []/[] | default via 198.51.100.1 dev wan2 table 106 proto 201 | default via fe80::1 dev wan2 table 106 proto 201",
			},
		},
		{
			name:   "mixed families: a policy of an IPv4-only and an IPv6-only link has one tier per family",
			config: "links:\n  - {name: a, interface: wan1, gateway: 192.0.2.1}\n  - {name: b, interface: wan2, gateway6: '2001:db8:2::1'}\npolicies:\n  - {name: p, tiers: [[a], [b]]}\nrules:\n  - {name: r, policy: p}\n",
			ifaces: ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "2001:db8:2::2/64")),
			want: []string{
				"default active 0/0 lower []/[] | default via 192.0.2.1 dev wan1 table 100 proto 201 | default via 2001:db8:2::1 dev wan2 table 100 proto 201",
				"p active 0/1 lower [1]/[] | default via 192.0.2.1 dev wan1 table 103 proto 201 | default via 2001:db8:2::1 dev wan2 table 103 proto 201",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := With(mustParse(t, tc.config), tc.ifaces, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, policyView(d)); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.warn, d.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPlanPolicyClasses: what the traffic rules become in the nft table:
// a policy's mark (and its failback label), the bypass's ct mark, a
// sticky rule's own mark with the links of its policy's active tier per
// family, and the default_policy's action for flows no rule matches.
func TestPlanPolicyClasses(t *testing.T) {
	y := dual3 + `policies:
  - {name: p, tiers: [[a, b], [c]], failback: flush}
default_policy: p
rules:
  - {name: vpn, dst: [10.8.0.0/16], policy: main}
  - {name: bank, proto: tcp, dst_ports: [443], policy: p, sticky: 10m}
  - {name: bulk, src: [10.9.0.0/24], policy: c}
`
	d, err := With(mustParse(t, y), dual3Ifaces(), Options{Down: map[string]string{"a": "x"}, Down6: map[string]string{"a": "x", "b": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range d.NFT.Classes {
		got = append(got, fmt.Sprintf("%s mark %#x ctmark %#x label %d sticky %v links %v/%v", c.Name, c.Mark, c.CtMark, c.Label, c.Sticky, c.StickyLinks, c.StickyLinks6))
	}
	// Marks from the top: bypass 0xff00, p 0xfe00, c's one-link policy
	// 0xfd00, then the sticky rule 0xfc00. p is active on its first tier
	// for IPv4 (b; a is down) and on its second for IPv6 (a and b down).
	want := []string{
		"vpn mark 0xff00 ctmark 0xff00 label 0 sticky 0s links []/[]",
		"bank mark 0xfc00 ctmark 0x0 label 1 sticky 10m0s links [b]/[c]",
		"bulk mark 0xfd00 ctmark 0x0 label 0 sticky 0s links []/[]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("classes (-want +got):\n%s", diff)
	}
	if d.NFT.Bypass != 0xff00 {
		t.Errorf("bypass %#x", d.NFT.Bypass)
	}
	if u := d.NFT.Unmatched; u.Mark != 0xfe00 || u.Label != 1 {
		t.Errorf("unmatched flows: %+v, want p's mark and label", u)
	}
	// The sticky rule's mark routes by its policy's table, for both
	// families, after the policies' own rules.
	var stickyRules []string
	for _, r := range d.Routing.Rules {
		if r.Mark == 0xfc00 {
			stickyRules = append(stickyRules, r.Command("add"))
		}
	}
	if diff := cmp.Diff([]string{
		"ip rule add pref 1304 from all fwmark 0xfc00/0xff00 lookup 104 proto 201",
		"ip -6 rule add pref 1304 from all fwmark 0xfc00/0xff00 lookup 104 proto 201",
	}, stickyRules); diff != "" {
		t.Errorf("sticky rule's ip rules (-want +got):\n%s", diff)
	}

	// Without default_policy, unmatched flows get nothing: the catch-all
	// rule routes them by the default policy.
	d, err = Plan(mustParse(t, links3+"rules:\n  - {name: r, policy: a}\n"), links3Ifaces())
	if err != nil {
		t.Fatal(err)
	}
	if d.NFT.Unmatched != (nft.Action{}) {
		t.Errorf("unmatched flows: %+v, want nothing", d.NFT.Unmatched)
	}
}

// A config whose rules expand to more classification elements than nft
// takes is refused by the planner, naming rules.
func TestPlanTooManyClassElements(t *testing.T) {
	var b strings.Builder
	b.WriteString(links3 + "rules:\n")
	for i := range 4 {
		fmt.Fprintf(&b, "  - {name: r%d, proto: tcp, src: [", i)
		for j := range 100 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "10.%d.%d.0/24", i, 2*j) // not adjacent: nft would merge them
		}
		b.WriteString("], dst_ports: [")
		for j := range 60 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d", 1000+2*j)
		}
		b.WriteString("], policy: a}\n")
	}
	_, err := Plan(mustParse(t, b.String()), links3Ifaces())
	if want := fmt.Sprintf("rules: the rules expand to 24000 set elements (every source x destination x port range of a rule), more than %d", nft.MaxClassElements); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
}

// TestPlanV6Families: a link's IPv6 side on its own, by the interface's
// addresses and main's IPv6 default route.
func TestPlanV6Families(t *testing.T) {
	one := func(gw6 string) string {
		return "links:\n  - {name: a, interface: wan1, gateway: 192.0.2.1, gateway6: '" + gw6 + "'}\n"
	}
	w := func(up bool, addrs ...string) map[string]rules.Iface {
		return ifaces(iface("wan1", up, append([]string{"192.0.2.2/24"}, addrs...)...))
	}
	for _, tc := range []struct {
		name   string
		config string
		ifaces map[string]rules.Iface
		opts   Options
		want   string // usable inroute addr gateway, or the reason
		err    string
	}{
		{"global gateway on the link's subnet", one("2001:db8:1::1"), w(true, "2001:db8:1::2/64", "fe80::2/64"), Options{}, "true true 2001:db8:1::2/64 2001:db8:1::1", ""},
		{"link-local gateway: the first global address", one("fe80::1"), w(true, "fe80::2/64", "2001:db8:9::2/64", "2001:db8:1::2/64"), Options{}, "true true 2001:db8:9::2/64 fe80::1", ""},
		{"down by the IPv6 health checks", one("fe80::1"), w(true, "2001:db8:1::2/64"), Options{Down6: map[string]string{"a": "probes lost"}}, "probes lost", ""},
		{"no global address yet", one("fe80::1"), w(true, "fe80::2/64", "::ffff:192.0.2.9/128"), Options{}, "interface wan1 has no global IPv6 address yet", ""},
		{"auto without a default route yet", one("auto"), w(true, "2001:db8:1::2/64"), Options{}, "interface wan1 has no IPv6 default route in main to take the gateway from yet (router advertisements)", ""},
		{"interface down", one("2001:db8:1::1"), w(false, "2001:db8:1::2/64"), Options{}, "interface wan1 is down", ""},
		{"missing interface", one("2001:db8:1::1"), map[string]rules.Iface{}, Options{MissingOK: true}, "interface wan1 does not exist", ""},
		{"gateway on no subnet of the link", one("2001:db8:7::1"), w(true, "2001:db8:1::2/64"), Options{}, "", "f.yaml:2: links[0].gateway6: 2001:db8:7::1 is not on a subnet of wan1 (its IPv6 addresses: [2001:db8:1::2/64]); a link-local next hop (fe80::) is always on-link"},
		{"gateway is the link's own address", one("2001:db8:1::2"), w(true, "2001:db8:1::2/64"), Options{}, "", "f.yaml:2: links[0].gateway6: 2001:db8:1::2 is wan1's own address, not a next hop"},
		{"IPv4 gateway auto from main's default route", "links:\n  - {name: a, interface: wan1, gateway: auto}\n", func() map[string]rules.Iface {
			m := w(true)
			i := m["wan1"]
			i.Gateways = []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1")}
			m["wan1"] = i
			return m
		}(), Options{}, "v4 192.0.2.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := With(mustParse(t, tc.config), tc.ifaces, tc.opts)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := d.Links[0]
			got := fmt.Sprintf("%v %v %v %v", l.V6.Usable, l.V6.InRoute, l.V6.Addr, l.V6.Gateway)
			switch {
			case !l.HasV6():
				got = "v4 " + l.Gateway.String()
			case !l.V6.InRoute:
				got = l.V6.Why
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// With every value of the mask taken by a link, flows from before apply
// have no mark to be routed by main: the plan says so, and has no rule
// for it.
func TestNoMainMarkLeft(t *testing.T) {
	d, err := Plan(mustParse(t, `mark_mask: 0x300
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1}
  - {name: isp3, interface: wan3, gateway: 203.0.113.1}
`), ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.2/24"), iface("wan3", true, "203.0.113.2/24")))
	if err != nil {
		t.Fatal(err)
	}
	if d.NFT.Main != 0 || len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "no value left to route flows from before apply by main") {
		t.Errorf("main mark %#x, warnings %q", d.NFT.Main, d.Warnings)
	}
	for _, r := range d.Routing.Rules {
		if r.Table == MainTable && r.Mark != 0 {
			t.Errorf("a fwmark rule to main without a mark for it: %+v", r)
		}
	}
}
