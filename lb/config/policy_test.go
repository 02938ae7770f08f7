package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// issueExample is the config of the policies issue, as written there.
const issueExample = `links:
  - name: fiber
    interface: wan1
    gateway: 192.0.2.1
    weight: 3
    nat: true
  - name: cable
    interface: wan2
    gateway: 198.51.100.1
    nat: true
  - name: lte
    interface: wwan0
    gateway: auto
    nat: true
    tier: 2                 # default policy: only when no tier-1 link is up (default tier 1)

policies:                   # optional; each is tiers of links, first tier with an up link wins
  - name: cable-first
    tiers: [[cable], [fiber, lte]]      # weights within a tier: the links' own weights
    last_resort: unreachable            # unreachable (default) | blackhole | main: when no link of any tier is up
    failback: keep                      # keep (default): flows on a lower tier stay when a higher tier returns; flush: they are deleted from conntrack so they re-establish on it

rules:                      # first match wins; decides the policy of NEW flows only
  - name: voip
    proto: udp              # tcp | udp | icmp | any (default any)
    src: [10.9.0.0/24]      # addresses or CIDRs (default any)
    dst: [203.0.113.0/24]
    src_ports: [5060]       # numbers or "low-high" ranges; tcp/udp only
    dst_ports: [5060, "10000-20000"]
    iif: lan0               # arrived on this interface (default any; the router's own traffic has none)
    policy: cable-first     # a policy, a link name (that link only), default (all links by tier and weight), or main (bypass: route by the main table, never pinned)
    sticky: 10m             # optional: a new flow from a source that used a link within this time takes that link again (if it is up)
`

// MaxLoss is written back as a percentage: equal to within rounding.
var cmpConfig = cmp.Options{cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateApprox(0, 1e-12)}

func TestParsePoliciesIssueExample(t *testing.T) {
	c, err := Parse("f.yaml", []byte(issueExample))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path:         "f.yaml",
		MarkMask:     0xff00,
		BalanceTable: 100,
		PriorityBase: 1000,
		Links: []Link{
			{Name: "fiber", Interface: "wan1", Gateway: netip.MustParseAddr("192.0.2.1"), Weight: 3, NAT: true, Table: 101, Mark: 0x100, Tier: 1, Check: defaultCheck},
			{Name: "cable", Interface: "wan2", Gateway: netip.MustParseAddr("198.51.100.1"), Weight: 1, NAT: true, Table: 102, Mark: 0x200, Tier: 1, Check: defaultCheck},
			{Name: "lte", Interface: "wwan0", GatewayAuto: true, Weight: 1, NAT: true, Table: 103, Mark: 0x300, Tier: 2, Check: defaultCheck},
		},
		Policies: []Policy{
			{Name: "default", Tiers: [][]int{{0, 1}, {2}}, LastResort: Unreachable, Failback: Keep, Implicit: true},
			{Name: "cable-first", Tiers: [][]int{{1}, {0, 2}}, LastResort: Unreachable, Failback: Keep},
		},
		Unmatched: 0,
		Rules: []Rule{{
			Name:     "voip",
			Proto:    UDP,
			Src:      []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")},
			Dst:      []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
			SrcPorts: []PortRange{{5060, 5060}},
			DstPorts: []PortRange{{5060, 5060}, {10000, 20000}},
			IIF:      "lan0",
			Policy:   "cable-first",
			Target:   1,
			Sticky:   10 * time.Minute,
		}},
		Hooks: Hooks{Timeout: DefaultHookTimeout},
	}
	if d := cmp.Diff(want, c, cmpConfig); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
}

// threeLinks is the issue's links, one a line: fiber (line 2), cable,
// lte (tier 2, line 4).
const threeLinks = `links:
  - {name: fiber, interface: wan1, gateway: 192.0.2.1, weight: 3}
  - {name: cable, interface: wan2, gateway: 198.51.100.1}
  - {name: lte, interface: wwan0, gateway: auto, tier: 2}
`

// Rules that name links, main and default; default_policy naming a link;
// every selector in its other spellings.
func TestParsePoliciesTargets(t *testing.T) {
	c, err := Parse("f.yaml", []byte(threeLinks+`default_policy: cable-first
policies:
  - name: cable-first
    tiers: [[cable], [fiber]]
    last_resort: main
    failback: flush
  - {name: lte-only, tiers: [[lte]], last_resort: blackhole}
rules:
  - {name: vpn, src: ['2001:db8::1', 10.0.0.1], policy: lte}
  - {name: lan, dst: [10.0.0.0/8], proto: any, policy: main}
  - {name: guest, iif: lan1, policy: cable, sticky: 1h}
  - {name: ping, proto: icmp, policy: default}
  - {name: web, proto: tcp, dst_ports: [" 80 ", 443, "8000-8080"], policy: lte}
  - {name: ntp, proto: udp, dst_ports: ["123-123"], policy: fiber}
  - {name: catchall, policy: lte-only}
`))
	if err != nil {
		t.Fatal(err)
	}
	wantPolicies := []Policy{
		{Name: "default", Tiers: [][]int{{0, 1}, {2}}, LastResort: Unreachable, Failback: Keep, Implicit: true},
		{Name: "cable-first", Tiers: [][]int{{1}, {0}}, LastResort: LastMain, Failback: Flush},
		{Name: "lte-only", Tiers: [][]int{{2}}, LastResort: Blackhole, Failback: Keep},
		{Name: "lte", Tiers: [][]int{{2}}, LastResort: Unreachable, Failback: Keep, Implicit: true},
		{Name: "cable", Tiers: [][]int{{1}}, LastResort: Unreachable, Failback: Keep, Implicit: true},
		{Name: "fiber", Tiers: [][]int{{0}}, LastResort: Unreachable, Failback: Keep, Implicit: true},
	}
	if d := cmp.Diff(wantPolicies, c.Policies); d != "" {
		t.Errorf("policies (-want +got):\n%s", d)
	}
	wantRules := []Rule{
		{Name: "vpn", Src: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("10.0.0.1/32")}, Policy: "lte", Target: 3},
		{Name: "lan", Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Policy: "main", Target: -1},
		{Name: "guest", IIF: "lan1", Policy: "cable", Target: 4, Sticky: time.Hour},
		{Name: "ping", Proto: ICMP, Policy: "default", Target: 0},
		{Name: "web", Proto: TCP, DstPorts: []PortRange{{80, 80}, {443, 443}, {8000, 8080}}, Policy: "lte", Target: 3},
		{Name: "ntp", Proto: UDP, DstPorts: []PortRange{{123, 123}}, Policy: "fiber", Target: 5},
		{Name: "catchall", Policy: "lte-only", Target: 2},
	}
	if d := cmp.Diff(wantRules, c.Rules, cmpConfig); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}
	if c.Unmatched != 1 {
		t.Errorf("Unmatched %d, want 1 (cable-first)", c.Unmatched)
	}
	if !c.Rules[1].Bypass() || c.Rules[0].Bypass() {
		t.Errorf("Bypass: lan %v, vpn %v", c.Rules[1].Bypass(), c.Rules[0].Bypass())
	}
}

// default_policy naming a link no rule names gets its one-link policy
// after the rules' ones.
func TestParsePoliciesDefaultPolicyLink(t *testing.T) {
	c, err := Parse("f.yaml", []byte(threeLinks+"default_policy: lte\nrules:\n  - {name: a, policy: fiber}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range c.Policies {
		names = append(names, p.Name)
	}
	if d := cmp.Diff([]string{"default", "fiber", "lte"}, names); d != "" || c.Unmatched != 2 {
		t.Errorf("policies %v, Unmatched %d (want 2)", names, c.Unmatched)
	}
	c, err = Parse("f.yaml", []byte(threeLinks+"default_policy: default\n"))
	if err != nil || c.Unmatched != 0 || len(c.Policies) != 1 {
		t.Errorf("default_policy: default: %v, %+v", err, c)
	}
}

// stickyRules is n sticky rules on the default policy, one a line.
func stickyRules(n int) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: r%d, policy: default, sticky: 1m}\n", i)
	}
	return b.String()
}

// somePolicies is n policies of fiber alone, one a line.
func somePolicies(n int) string {
	var b strings.Builder
	b.WriteString("policies:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: p%d, tiers: [[fiber]]}\n", i)
	}
	return b.String()
}

// policyErrorCases: every validation error of policies, rules, tiers and
// default_policy, and the whole one-line message each gets.
var policyErrorCases = []struct {
	name, yaml string
	want       string
}{
	// Link tiers.
	{"tier 0", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, tier: 0}\n", "f.yaml:2: links[0].tier: 0 is out of range (1..16)"},
	{"tier 17", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, tier: 17}\n", "f.yaml:2: links[0].tier: 17 is out of range (1..16)"},
	{"tier not a number", link0("    tier: backup\n"), `f.yaml:5: links[0].tier: "backup" is not an integer`},

	// Policies.
	{"policy without name", threeLinks + "policies:\n  - tiers: [[fiber]]\n", "f.yaml:6: policies[0].name: missing: every policy needs a unique name"},
	{"policy bad name", threeLinks + "policies:\n  - {name: 'a b', tiers: [[fiber]]}\n", `f.yaml:6: policies[0].name: "a b": use letters, digits, '-', '_' and '.' (at most 32)`},
	{"policy named default", threeLinks + "policies:\n  - {name: default, tiers: [[fiber]]}\n", `f.yaml:6: policies[0].name: "default" is built in (default: every link by tier and weight; main: the main table): choose another name`},
	{"policy named main", threeLinks + "policies:\n  - {name: main, tiers: [[fiber]]}\n", `f.yaml:6: policies[0].name: "main" is built in (default: every link by tier and weight; main: the main table): choose another name`},
	{"policy named as a link", threeLinks + "policies:\n  - {name: lte, tiers: [[fiber]]}\n", `f.yaml:6: policies[0].name: "lte" is the name of links[2]: a rule's policy names a policy or a link, so they must differ`},
	{"policy twice", threeLinks + "policies:\n  - {name: p, tiers: [[fiber]]}\n  - {name: p, tiers: [[cable]]}\n", `f.yaml:7: policies[1].name: duplicate policy name "p" (also policies[0])`},
	{"policy without tiers", threeLinks + "policies:\n  - name: p\n    failback: flush\n", "f.yaml:6: policies[0].tiers: missing: a list of tiers, each a list of links (like [[fiber], [lte]])"},
	{"policy with no tiers", threeLinks + "policies:\n  - name: p\n    tiers: []\n", "f.yaml:7: policies[0].tiers: missing: a list of tiers, each a list of links (like [[fiber], [lte]])"},
	{"empty tier", threeLinks + "policies:\n  - name: p\n    tiers: [[fiber], []]\n", "f.yaml:7: policies[0].tiers[1]: empty tier: each tier lists one link or more"},
	{"empty tier on its own line", threeLinks + "policies:\n  - name: p\n    tiers:\n      - [fiber]\n      - []\n", "f.yaml:9: policies[0].tiers[1]: empty tier: each tier lists one link or more"},
	{"tiers not lists", threeLinks + "policies:\n  - name: p\n    tiers: [fiber, lte]\n", "f.yaml:7: policies[0].tiers[0]: want a list, not a single value"},
	{"unknown link in a tier", threeLinks + "policies:\n  - name: p\n    tiers: [[fiber], [lte, dsl]]\n", `f.yaml:7: policies[0].tiers[1][1]: "dsl" is not a link`},
	{"null link in a tier", threeLinks + "policies:\n  - name: p\n    tiers: [[~]]\n", `f.yaml:7: policies[0].tiers[0][0]: "" is not a link`},
	{"link in two tiers", threeLinks + "policies:\n  - name: p\n    tiers: [[fiber], [cable, fiber]]\n", `f.yaml:7: policies[0].tiers[1][1]: link "fiber" is already in tiers[0]: a link is in one tier of a policy at most`},
	{"link twice in a tier", threeLinks + "policies:\n  - name: p\n    tiers:\n      - [fiber, cable]\n      - [lte,\n         cable]\n", `f.yaml:10: policies[0].tiers[1][1]: link "cable" is already in tiers[0]: a link is in one tier of a policy at most`},
	{"bad last_resort", threeLinks + "policies:\n  - name: p\n    tiers: [[fiber]]\n    last_resort: drop\n", `f.yaml:8: policies[0].last_resort: "drop" is not unreachable, blackhole or main`},
	{"bad failback", threeLinks + "policies:\n  - name: p\n    tiers: [[fiber]]\n    failback: yes\n", `f.yaml:8: policies[0].failback: "yes" is not keep or flush`},
	{"unknown policy key", threeLinks + "policies:\n  - name: p\n    tier: [[fiber]]\n", `f.yaml:7: policies[0]: unknown key "tier" (did you mean "tiers"?)`},
	{"too many policies", threeLinks + somePolicies(MaxPolicies+1), "f.yaml:6: policies: 65 entries: at most 64 are supported"},

	// Rules.
	{"rule without name", threeLinks + "rules:\n  - {policy: fiber}\n", "f.yaml:6: rules[0].name: missing: every rule needs a unique name (status and metrics show it)"},
	{"rule bad name", threeLinks + "rules:\n  - {name: 'voip!', policy: fiber}\n", `f.yaml:6: rules[0].name: "voip!": use letters, digits, '-', '_' and '.' (at most 32)`},
	{"rule twice", threeLinks + "rules:\n  - {name: a, policy: fiber}\n  - {name: a, policy: lte}\n", `f.yaml:7: rules[1].name: duplicate rule name "a" (also rules[0])`},
	{"rule without policy", threeLinks + "rules:\n  - name: voip\n    proto: udp\n", "f.yaml:6: rules[0].policy: missing: every rule needs a policy (a policy, a link, default or main)"},
	{"rule unknown policy", threeLinks + "policies:\n  - {name: cable-first, tiers: [[cable]]}\nrules:\n  - name: voip\n    policy: cable-frist\n", `f.yaml:9: rules[0].policy: "cable-frist" is neither a policy nor a link (did you mean "cable-first"?)`},
	{"rule unknown link", threeLinks + "rules:\n  - name: voip\n    policy: dsl\n", `f.yaml:7: rules[0].policy: "dsl" is neither a policy nor a link`},
	{"unknown rule key", threeLinks + "rules:\n  - name: voip\n    polcy: fiber\n", `f.yaml:7: rules[0]: unknown key "polcy" (did you mean "policy"?)`},
	{"bad proto", threeLinks + "rules:\n  - {name: a, proto: sctp, policy: fiber}\n", `f.yaml:6: rules[0].proto: "sctp" is not tcp, udp, icmp or any`},
	{"ports without proto", threeLinks + "rules:\n  - name: a\n    dst_ports: [443]\n    policy: fiber\n", "f.yaml:7: rules[0].dst_ports: ports need proto tcp or udp (this rule has proto any)"},
	{"ports with icmp", threeLinks + "rules:\n  - name: a\n    proto: icmp\n    src_ports: [443]\n    policy: fiber\n", "f.yaml:8: rules[0].src_ports: ports need proto tcp or udp (this rule has proto icmp)"},
	{"bad range", threeLinks + "rules:\n  - name: voip\n    proto: udp\n    dst_ports:\n      - 5060\n      - \"20000-10000\"\n    policy: fiber\n", `f.yaml:10: rules[0].dst_ports[1]: "20000-10000": high 10000 is below low 20000`},
	{"port 0", threeLinks + "rules:\n  - {name: a, proto: tcp, dst_ports: [0], policy: fiber}\n", `f.yaml:6: rules[0].dst_ports[0]: "0" is not a port (1..65535) or a range of them (like "10000-20000")`},
	{"port too big", threeLinks + "rules:\n  - {name: a, proto: tcp, dst_ports: [65536], policy: fiber}\n", `f.yaml:6: rules[0].dst_ports[0]: "65536" is not a port (1..65535) or a range of them (like "10000-20000")`},
	{"port a name", threeLinks + "rules:\n  - {name: a, proto: tcp, dst_ports: [https], policy: fiber}\n", `f.yaml:6: rules[0].dst_ports[0]: "https" is not a port (1..65535) or a range of them (like "10000-20000")`},
	{"port range open", threeLinks + "rules:\n  - {name: a, proto: tcp, dst_ports: [\"1000-\"], policy: fiber}\n", `f.yaml:6: rules[0].dst_ports[0]: "1000-" is not a port (1..65535) or a range of them (like "10000-20000")`},
	{"bad CIDR", threeLinks + "rules:\n  - {name: a, dst: [10.0.0.0/33], policy: fiber}\n", `f.yaml:6: rules[0].dst[0]: "10.0.0.0/33" is not an address or a CIDR (like 10.9.0.0/24 or 2001:db8::/48)`},
	{"CIDR with host bits", threeLinks + "rules:\n  - name: a\n    src:\n      - 10.9.0.0/24\n      - 10.9.1.7/24\n    policy: fiber\n", `f.yaml:9: rules[0].src[1]: "10.9.1.7/24" has bits set past the prefix length: did you mean 10.9.1.0/24?`},
	{"IPv6 CIDR with host bits", threeLinks + "rules:\n  - {name: a, src: ['2001:db8::1/64'], policy: fiber}\n", `f.yaml:6: rules[0].src[0]: "2001:db8::1/64" has bits set past the prefix length: did you mean 2001:db8::/64?`},
	{"address a name", threeLinks + "rules:\n  - {name: a, dst: [example.com], policy: fiber}\n", `f.yaml:6: rules[0].dst[0]: "example.com" is not an address or a CIDR (like 10.9.0.0/24 or 2001:db8::/48)`},
	{"address with zone", threeLinks + "rules:\n  - {name: a, src: ['fe80::1%lan0'], policy: fiber}\n", `f.yaml:6: rules[0].src[0]: "fe80::1%lan0": a rule's address cannot carry a zone (use iif for the interface)`},
	{"IPv4-mapped address", threeLinks + "rules:\n  - {name: a, src: ['::ffff:10.0.0.1'], policy: fiber}\n", `f.yaml:6: rules[0].src[0]: "::ffff:10.0.0.1" is an IPv4-mapped IPv6 address, which no packet carries: write the IPv4 address`},
	{"families never match", threeLinks + "rules:\n  - name: a\n    src: [10.0.0.0/8]\n    dst: ['2001:db8::/32']\n    policy: fiber\n", "f.yaml:8: rules[0].dst: only IPv6 addresses, and src only IPv4: no flow matches both"},
	{"IPv6 rule on an IPv4 link", threeLinks + "rules:\n  - name: a\n    dst: ['2001:db8::/32']\n    policy: fiber\n", `f.yaml:8: rules[0].policy: "fiber" has no link with IPv6 (gateway6), and the rule matches only IPv6 flows`},
	{"IPv4 rule on an IPv6 policy", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: b, interface: y, gateway6: auto}\npolicies:\n  - {name: v6, tiers: [[b]]}\nrules:\n  - {name: r, src: [10.0.0.0/8, '2001:db8::/32'], dst: [192.0.2.0/24], policy: v6}\n", `f.yaml:7: rules[0].policy: "v6" has no link with IPv4 (gateway), and the rule matches only IPv4 flows`},
	{"src a single value", threeLinks + "rules:\n  - {name: a, src: 10.0.0.0/8, policy: fiber}\n", "f.yaml:6: rules[0].src: want a list, not a single value"},
	{"bad iif", threeLinks + "rules:\n  - {name: a, iif: 'lan 0', policy: fiber}\n", `f.yaml:6: rules[0].iif: "lan 0" is not a valid interface name`},
	{"iif of a link", threeLinks + "rules:\n  - name: a\n    iif: wan2\n    policy: fiber\n", `f.yaml:7: rules[0].iif: "wan2" is the interface of links[1] (cable): flows arriving on a link stay on it, so the rule would never match`},
	{"bad duration", threeLinks + "rules:\n  - name: banking\n    policy: default\n    sticky: 10 minutes\n", `f.yaml:8: rules[0].sticky: "10 minutes" is not a duration (like 500ms or 2s)`},
	{"duration without unit", threeLinks + "rules:\n  - {name: banking, policy: default, sticky: 600}\n", `f.yaml:6: rules[0].sticky: "600" is not a duration (like 500ms or 2s)`},
	{"sticky too short", threeLinks + "rules:\n  - {name: banking, policy: default, sticky: 500ms}\n", "f.yaml:6: rules[0].sticky: 500ms is out of range (1s..24h)"},
	{"sticky too long", threeLinks + "rules:\n  - {name: banking, policy: default, sticky: 25h}\n", "f.yaml:6: rules[0].sticky: 25h0m0s is out of range (1s..24h)"},
	{"sticky with main", threeLinks + "rules:\n  - name: lan\n    policy: main\n    sticky: 10m\n", "f.yaml:8: rules[0].sticky: a rule with policy main is never pinned to a link, so it cannot be sticky"},
	{"too many rules", threeLinks + "rules:\n" + strings.Repeat("  - {name: a, policy: fiber}\n", MaxRules+1), "f.yaml:6: rules: 1001 entries: at most 1000 are supported"},

	// default_policy.
	{"unknown default_policy", threeLinks + "default_policy: fibre\n", `f.yaml:5: default_policy: "fibre" is neither a policy nor a link (did you mean "fiber"?)`},
	{"default_policy main", threeLinks + "default_policy: main\n", `f.yaml:5: default_policy: "main" cannot be the policy of unmatched flows: name a policy, a link or default (a rule with policy main bypasses flowpin)`},
	{"default_policy a list", threeLinks + "default_policy: [fiber]\n", "f.yaml:5: default_policy: want a single value, not a list"},

	// Hook variables: two policies must not give the on_change hook one
	// FLOWPIN_POLICY_<NAME>_TIER.
	{"policies whose hook variables collide", threeLinks + "policies:\n  - {name: cable-first, tiers: [[cable]]}\n  - {name: cable_first, tiers: [[fiber]]}\n", `f.yaml:7: policies[1].name: "cable_first" and "cable-first" (policies[0].name, line 6) both give the on_change hook the variable FLOWPIN_POLICY_CABLE_FIRST_TIER: rename one`},
	{"policy Default", threeLinks + "policies:\n  - {name: Default, tiers: [[cable]]}\n", `f.yaml:6: policies[0].name: "Default" and the built-in policy "default" both give the on_change hook the variable FLOWPIN_POLICY_DEFAULT_TIER: rename one`},
	{"policy and link of rules", threeLinks + "policies:\n  - {name: FIBER, tiers: [[cable]]}\nrules:\n  - {name: a, policy: FIBER}\n  - name: b\n    policy: fiber\n", `f.yaml:10: rules[1].policy: "fiber" and "FIBER" (policies[0].name, line 6) both give the on_change hook the variable FLOWPIN_POLICY_FIBER_TIER: rename one`},
	{"links of rules", "links:\n  - {name: isp-1, interface: x, gateway: 10.0.0.1}\n  - {name: isp_1, interface: y, gateway: 10.0.0.1}\nrules:\n  - {name: a, policy: isp-1}\n  - {name: b, policy: isp_1}\n", `f.yaml:6: rules[1].policy: "isp_1" and "isp-1" (rules[0].policy, line 5) both give the on_change hook the variable FLOWPIN_POLICY_ISP_1_TIER: rename one`},
	{"link of default_policy", "links:\n  - {name: isp-1, interface: x, gateway: 10.0.0.1}\n  - {name: isp_1, interface: y, gateway: 10.0.0.1}\nrules:\n  - {name: a, policy: isp-1}\ndefault_policy: isp_1\n", `f.yaml:6: default_policy: "isp_1" and "isp-1" (rules[0].policy, line 5) both give the on_change hook the variable FLOWPIN_POLICY_ISP_1_TIER: rename one`},

	// The mark space and the ip rule layout.
	{"too many policies for the mask", "mark_mask: 0x0f00\n" + threeLinks + somePolicies(13), "f.yaml:19: policies[12]: mark_mask 0xf00 has 15 mark values; the 3 links and the policies and sticky rules up to here need 16"},
	{"too many sticky rules for the mask", "mark_mask: 0x0700\n" + threeLinks + stickyRules(5), "f.yaml:11: rules[4]: mark_mask 0x700 has 7 mark values; the 3 links and the policies and sticky rules up to here need 8"},
	{"link policies and main for the mask", "mark_mask: 0x0700\n" + threeLinks + "rules:\n  - {name: a, policy: fiber}\n  - {name: b, policy: fiber}\n  - {name: c, policy: main}\n  - {name: d, policy: lte}\n  - {name: e, policy: cable, sticky: 1m}\n", "f.yaml:11: rules[4]: mark_mask 0x700 has 7 mark values; the 3 links and the policies, sticky rules and policy main up to here need 8"},
	{"default_policy link for the mask", "mark_mask: 0x0300\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: b, interface: y, gateway: 10.0.0.1}\ndefault_policy: b\nrules:\n  - {name: r, policy: a}\n", "f.yaml:5: default_policy: mark_mask 0x300 has 3 mark values; the 2 links and the policies and sticky rules up to here need 4"},
	{"too many sticky rules for the ip rules", threeLinks + stickyRules(MaxRoutedMarks+1), "f.yaml:104: rules[98]: 99 policies and sticky rules up to here; flowpin's ip rule layout has room for 98"},
	{"too many policies and sticky rules for the ip rules", threeLinks + somePolicies(MaxPolicies) + stickyRules(MaxRoutedMarks-MaxPolicies+1), "f.yaml:105: rules[34]: 99 policies and sticky rules up to here; flowpin's ip rule layout has room for 98"},
}

func TestParsePolicyErrors(t *testing.T) {
	for _, tc := range policyErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error is %T, want *ConfigError", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

// The limits just inside each bound parse.
func TestParsePolicyLimits(t *testing.T) {
	for name, y := range map[string]string{
		"98 sticky rules":                    threeLinks + stickyRules(MaxRoutedMarks),
		"64 policies and 34 sticky rules":    threeLinks + somePolicies(MaxPolicies) + stickyRules(MaxRoutedMarks-MaxPolicies),
		"12 policies in 15 values":           "mark_mask: 0x0f00\n" + threeLinks + somePolicies(12),
		"1000 rules":                         threeLinks + "rules:\n" + manyRules(MaxRules),
		"tier 16":                            "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, tier: 16}\n",
		"sticky 1s":                          threeLinks + "rules:\n  - {name: a, policy: default, sticky: 1s}\n",
		"sticky 24h":                         threeLinks + "rules:\n  - {name: a, policy: default, sticky: 24h}\n",
		"ports 1 and 65535":                  threeLinks + "rules:\n  - {name: a, proto: tcp, src_ports: [1, \"1-65535\", 65535], policy: default}\n",
		"IPv6 rule on a dual-stack policy":   "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: b, interface: y, gateway6: auto}\npolicies:\n  - {name: p, tiers: [[a], [b]]}\nrules:\n  - {name: r, dst: ['2001:db8::/32'], policy: p}\n",
		"mixed families on one side":         "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, gateway6: auto}\nrules:\n  - {name: a, src: [10.0.0.0/8, '2001:db8::/32'], dst: ['2001:db8:1::/48'], policy: default}\n",
		"policies that differ as variables":  threeLinks + "policies:\n  - {name: cable-first, tiers: [[cable]]}\n  - {name: cable-first2, tiers: [[fiber]]}\n  - {name: default2, tiers: [[lte]]}\nrules:\n  - {name: a, policy: fiber}\n  - {name: b, policy: fiber}\n",
		"main bypass in the last mark value": "mark_mask: 0x0300\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: b, interface: y, gateway: 10.0.0.1}\nrules:\n  - {name: r, policy: main}\n",
	} {
		if _, err := Parse("f.yaml", []byte(y)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// manyRules is n rules on fiber, one a line.
func manyRules(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - {name: r%d, policy: fiber}\n", i)
	}
	return b.String()
}

func TestAllMaskValues(t *testing.T) {
	for _, tc := range []struct {
		mask uint32
		n    int
		head []uint32
	}{
		{0xff00, 255, []uint32{0x100, 0x200, 0x300}},
		{0x0f00, 15, []uint32{0x100, 0x200}},
		{0x0500, 3, []uint32{0x100, 0x400, 0x500}},
		{0xffff0000, MaxMaskValues, []uint32{0x10000, 0x20000}},
		{0xffffffff, MaxMaskValues, []uint32{1, 2, 3}},
	} {
		got := AllMaskValues(tc.mask)
		if len(got) != tc.n || !hasPrefix(got, tc.head) {
			t.Errorf("AllMaskValues(%#x) = %#x (len %d), want %d starting %#x", tc.mask, got[:min(len(got), 4)], len(got), tc.n, tc.head)
		}
		if m := MaskValues(tc.mask); !hasPrefix(got, m) || len(m) != min(tc.n, MaxLinks) {
			t.Errorf("MaskValues(%#x) (len %d) is not the first %d of AllMaskValues", tc.mask, len(m), min(tc.n, MaxLinks))
		}
	}
}
