package diagnose

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

func report(cs []VerifyCheck) string {
	var b strings.Builder
	for _, c := range cs {
		status := "ok  "
		switch {
		case c.Skip:
			status = "skip"
		case !c.OK:
			status = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %s: %s", status, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(&b, " | fix: %s", c.Fix)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestVerifyEndToEnd runs Verify on the fake dual-WAN router: as applied
// every check passes; each injected fault fails exactly the checks it
// breaks, each with its fix.
func TestVerifyEndToEnd(t *testing.T) {
	vpn := 200 // someone's table, with a default route by wan1
	for _, c := range []struct {
		name  string
		fault func(t *testing.T, f *fakeKernel)
		// fail: the checks that must fail, and a part of each one's
		// detail and fix.
		fail map[string][2]string
	}{
		{name: "as applied"},
		{
			name:  "missing rule",
			fault: func(_ *testing.T, f *fakeKernel) { f.delRule(1001) },
			fail: map[string][2]string{
				"rule 1001": {"missing: ip rule add pref 1001 from 192.0.2.2 lookup 101 suppress_prefixlength 0 proto 201", "flowpin apply"},
			},
		},
		{
			name:  "missing fwmark rule",
			fault: func(_ *testing.T, f *fakeKernel) { f.delRule(1102) },
			fail: map[string][2]string{
				"rule 1102":               {"missing: ip rule add pref 1102 from all fwmark 0x200/0xff00 lookup 102", "flowpin apply"},
				"link isp2: fwmark 0x200": {"want wan2 via 198.51.100.1: table 100, rule 1500: from all lookup 100 proto 201", "flowpin apply"},
			},
		},
		{
			name: "stale route of a removed link",
			fault: func(_ *testing.T, f *fakeKernel) {
				f.routes = append(f.routes, fakeRoute{Owned: true, Route: rules.Route{Family: rules.V4, Table: 103,
					Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "wan2", Gw: netip.MustParseAddr("198.51.100.1")}})
			},
			fail: map[string][2]string{
				"route 2/103/0.0.0.0/0": {"unexpected: ip route replace default via 198.51.100.1 dev wan2 table 103 proto 201 (flowpin's tag, not in the plan)", "flowpin apply"},
			},
		},
		{
			name: "route differs",
			fault: func(t *testing.T, f *fakeKernel) {
				f.route(t, 102, "0.0.0.0/0").Gw = netip.MustParseAddr("198.51.100.9")
			},
			fail: map[string][2]string{
				"route 2/102/0.0.0.0/0":        {"differs: have ip route replace default via 198.51.100.9 dev wan2 table 102", "flowpin apply"},
				"link isp2: from 198.51.100.2": {"leaves by wan2 via 198.51.100.9, want wan2 via 198.51.100.1: table 102, rule 1402: from 198.51.100.2 lookup 102 proto 201", "flowpin apply"},
				"link isp2: fwmark 0x200":      {"leaves by wan2 via 198.51.100.9", "flowpin apply"},
			},
		},
		{
			name:  "wrong sysctl",
			fault: func(_ *testing.T, f *fakeKernel) { f.sysctls["net/ipv4/conf/wan1/rp_filter"] = "1" },
			fail: map[string][2]string{
				"sysctl net.ipv4.conf.wan1.rp_filter": {"is 1, want 2: strict reverse-path filtering", "flowpin apply (or: sysctl -w net.ipv4.conf.wan1.rp_filter=2)"},
			},
		},
		{
			name: "foreign main-suppress rule before flowpin's",
			fault: func(_ *testing.T, f *fakeKernel) {
				r := lookupRule(500, unix.RT_TABLE_MAIN)
				r.SuppressPrefixlen = 0
				f.setRule(r)
			},
			fail: map[string][2]string{
				"foreign rule 500": {`"500: from all lookup main suppress_prefixlength 0" (not flowpin's) comes before flowpin's rules (1000-1500) and catches their traffic to every route more specific than /0`, "ip rule del pref 500, or narrow its selector, or move it after 1500"},
			},
		},
		{
			name: "foreign rule shadows flowpin's",
			fault: func(_ *testing.T, f *fakeKernel) {
				f.setRule(lookupRule(500, vpn))
				f.routes = append(f.routes, fakeRoute{Route: rules.Route{Family: rules.V4, Table: vpn,
					Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "wan1", Gw: netip.MustParseAddr("192.0.2.1")}})
			},
			fail: map[string][2]string{
				"foreign rule 500":             {`"500: from all lookup 200" (not flowpin's) comes before flowpin's rules (1000-1500) and catches their traffic`, "ip rule del pref 500"},
				"link isp2: from 198.51.100.2": {"leaves by wan1 via 192.0.2.1, want wan2 via 198.51.100.1: table 200, rule 500: from all lookup 200 (not flowpin's)", "ip rule del pref 500, or move it after flowpin's rules"},
				"link isp2: fwmark 0x200":      {"rule 500: from all lookup 200 (not flowpin's)", "ip rule del pref 500"},
				"new flows":                    {"never: isp2", "flowpin apply; if a foreign rule is reported above, remove it"},
			},
		},
		{
			name: "foreign blackhole behind a goto",
			fault: func(_ *testing.T, f *fakeKernel) {
				g := lookupRule(500, 0)
				g.Action, g.Goto, g.Mark, g.Mask = rules.ActionGoto, 600, 0x200, 0xff00
				b := lookupRule(600, 0)
				b.Action = rules.ActionBlackhole
				b.Dst = netip.MustParsePrefix("203.0.113.0/24")
				f.setRule(g)
				f.setRule(b)
			},
			fail: map[string][2]string{
				"foreign rule 500": {`"500: from all fwmark 0x200/0xff00 goto 600" selects on mark bits 0xff00 that flowpin owns`, "ip rule del pref 500, or change mark_mask"},
			},
		},
		{
			name: "foreign mark writer",
			fault: func(_ *testing.T, f *fakeKernel) {
				f.writers = []nft.MarkWriter{{Family: "inet", Table: "fw", Chain: "pre", Handle: 7, Hook: "prerouting", Priority: -150, What: "meta mark", Bits: 0xffffffff}}
			},
			fail: map[string][2]string{
				"foreign nft rule": {"table inet fw chain pre handle 7 (hook prerouting priority -150) sets meta mark bits 0xff00", "nft delete rule inet fw pre handle 7, or make it keep bits 0xff00"},
			},
		},
		{
			name:  "nft table missing",
			fault: func(_ *testing.T, f *fakeKernel) { f.nft = &nft.Current{Chains: map[string][]string{}} },
			fail: map[string][2]string{
				"nft table": {"missing: table inet flowpin", "flowpin apply"},
			},
		},
		{
			name: "gateway does not answer",
			fault: func(_ *testing.T, f *fakeKernel) {
				f.neigh["wan2 198.51.100.1"] = rules.Neighbour{State: "failed"}
			},
			fail: map[string][2]string{
				"link isp2: gateway 198.51.100.1": {"no ARP/ND answer on wan2 (neighbour failed)", "check the cable and the gateway address in the config"},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, cfg, _ := dualWAN(t)
			if c.fault != nil {
				c.fault(t, f)
			}
			rep, err := f.kernel().Verify(cfg, VerifyOptions{ProbeWait: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			failed := map[string]VerifyCheck{}
			for _, ch := range rep.Checks {
				if !ch.OK && !ch.Skip {
					if _, dup := failed[ch.Name]; dup {
						t.Errorf("check %q failed twice", ch.Name)
					}
					failed[ch.Name] = ch
				}
			}
			if got, want := slices.Sorted(maps.Keys(failed)), slices.Sorted(maps.Keys(c.fail)); !slices.Equal(got, want) {
				t.Fatalf("failed checks %q, want %q:\n%s", got, want, report(rep.Checks))
			}
			if rep.Failed() != len(c.fail) {
				t.Errorf("Failed() = %d, want %d", rep.Failed(), len(c.fail))
			}
			for name, w := range c.fail {
				ch := failed[name]
				if !strings.Contains(ch.Detail, w[0]) || !strings.Contains(ch.Fix, w[1]) {
					t.Errorf("check %s:\n  detail %q\n  fix    %q\nwant detail containing %q and fix containing %q", name, ch.Detail, ch.Fix, w[0], w[1])
				}
			}
			if c.fault == nil {
				// Every stage ran: routing, nft, sysctls, shadowing, foreign
				// nft, both links (two routes and a gateway each), spread.
				var names []string
				for _, ch := range rep.Checks {
					names = append(names, ch.Name)
				}
				for _, w := range []string{"routing", "nft table", "sysctl net.ipv4.fib_multipath_hash_policy", "shadowing", "foreign nft",
					"link isp1: from 192.0.2.2", "link isp1: fwmark 0x100", "link isp1: gateway 192.0.2.1",
					"link isp2: from 198.51.100.2", "link isp2: fwmark 0x200", "link isp2: gateway 198.51.100.1",
					"wildcard source", "new flows"} {
					if !slices.Contains(names, w) {
						t.Errorf("no check %q:\n%s", w, report(rep.Checks))
					}
				}
			}
		})
	}
}

// TestVerifyGatewaysInParallel: with 32 links whose gateways never answer,
// verify waits for ARP on 16 links at once (not one after another), and
// reports the links in config order.
func TestVerifyGatewaysInParallel(t *testing.T) {
	run := func(n int) (time.Duration, *fakeKernel, *VerifyReport) {
		f, c := manyLinks(t, n)
		f.neigh = map[string]rules.Neighbour{}
		f.neighDelay = 20 * time.Millisecond
		start := time.Now()
		rep, err := f.kernel().Verify(c, VerifyOptions{ProbeWait: 100 * time.Millisecond, Samples: 64})
		if err != nil {
			t.Fatal(err)
		}
		return time.Since(start), f, rep
	}
	one, _, _ := run(1)
	const n = 32
	took, f, rep := run(n)
	t.Logf("one silent gateway: %v; %d silent gateways: %v", one.Round(time.Millisecond), n, took.Round(time.Millisecond))

	if f.peakNeigh != 16 {
		t.Errorf("at most %d neighbour lookups under way at once, want 16", f.peakNeigh)
	}
	if f.probes != n {
		t.Errorf("%d probes, want one per link (%d)", f.probes, n)
	}
	// Two waves of 16: about two waits. One after another would be 32.
	if took > 8*one {
		t.Errorf("%d silent gateways took %v, one took %v: not checked in parallel", n, took, one)
	}
	var order []string
	for _, ch := range rep.Checks {
		if strings.HasPrefix(ch.Name, "link ") {
			order = append(order, ch.Name)
			if strings.Contains(ch.Name, "gateway") && (ch.OK || !strings.Contains(ch.Detail, "no ARP/ND answer")) {
				t.Errorf("%s: %s", ch.Name, ch.Detail)
			}
		}
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("link l%d: from 10.%d.0.2", i, i+1), fmt.Sprintf("link l%d: fwmark %#x", i, (i+1)<<8),
			fmt.Sprintf("link l%d: gateway 10.%d.0.1", i, i+1))
	}
	if !slices.Equal(order, want) {
		t.Errorf("link checks out of order:\n%s\nwant\n%s", strings.Join(order, "\n"), strings.Join(want, "\n"))
	}
}

func steps(e *Explanation) string {
	var b strings.Builder
	for _, s := range e.Steps {
		fmt.Fprintf(&b, "  %-16s %s\n", s.Stage+":", s.Text)
	}
	for _, n := range e.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return b.String()
}

// TestExplainEndToEnd explains packets on the fake dual-WAN router: the
// first packet of a new flow, a packet of a flow pinned to isp2, a reply
// arriving from isp2, and a forwarded packet with forwarding off.
func TestExplainEndToEnd(t *testing.T) {
	lanHost := netip.MustParseAddr("10.0.0.5")
	far := netip.MustParseAddr("198.18.0.1")
	pinned := ct.Flow{
		Orig:  ct.Tuple{Proto: unix.IPPROTO_TCP, Src: lanHost, Sport: 40001, Dst: far, Dport: 443},
		Reply: ct.Tuple{Proto: unix.IPPROTO_TCP, Src: far, Sport: 443, Dst: netip.MustParseAddr("198.51.100.2"), Dport: 40001},
		Mark:  0x200,
	}
	// The reply of a flow that isp2 carried into the LAN, not NATed.
	inbound := ct.Flow{
		Orig:  ct.Tuple{Proto: unix.IPPROTO_TCP, Src: lanHost, Sport: 22, Dst: far, Dport: 50000},
		Reply: ct.Tuple{Proto: unix.IPPROTO_TCP, Src: far, Sport: 50000, Dst: lanHost, Dport: 22},
		Mark:  0x200,
	}
	newFlow := Packet{Src: lanHost, Dst: far, Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40000, Dport: 443}
	for _, c := range []struct {
		name  string
		p     Packet
		setup func(f *fakeKernel)
		// summary; steps: stage -> a part of its text
		summary string
		steps   map[string]string
		pinned  bool
		hash    bool
	}{
		{
			name: "new flow", p: newFlow,
			// The fake's hash sends this 5-tuple to isp1 (checked below
			// against the fake's own answer).
			summary: "leaves by wan1 via 192.0.2.1 (link isp1) with source 192.0.2.2, picked by the multipath hash",
			hash:    true,
			steps: map[string]string{
				"conntrack":       "no entry for tcp 10.0.0.5:40000 -> 198.18.0.1:443: this is the first packet of a new flow",
				"nft prerouting":  "no restore (the flow has no link yet): meta mark stays 0",
				"ip rule":         "1500: from all lookup 100 proto 201  (flowpin's: new flows: the weighted multipath route)",
				"route":           "default table 100 nexthop via 192.0.2.1 dev wan1 weight 3 nexthop via 198.51.100.1 dev wan2 weight 1",
				"nexthop":         "the multipath hash of tcp 10.0.0.5:40000 -> 198.18.0.1:443 picks via 192.0.2.1 dev wan1 out of wan1 weight 3, wan2 weight 1",
				"nft postrouting": "save: ct mark set to 0x100: every later packet of this flow is pinned to link isp1",
				"nat":             "masquerade on wan1: source becomes 192.0.2.2",
			},
		},
		{
			name: "pinned flow", p: Packet{Src: lanHost, Dst: far, Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40001, Dport: 443},
			setup:   func(f *fakeKernel) { f.flows = append(f.flows, pinned) },
			summary: "leaves by wan2 via 198.51.100.1 (link isp2) with source 198.51.100.2, pinned by its conntrack mark",
			pinned:  true,
			steps: map[string]string{
				"conntrack":       "existing flow (original direction of 10.0.0.5:40001 -> 198.18.0.1:443), ct mark 0x200: pinned to link isp2 (wan2)",
				"nft prerouting":  "restore: ct mark & 0xff00 == 0x200, so meta mark set to 0x200: the fwmark rule of link isp2 routes it",
				"ip rule":         "1102: from all fwmark 0x200/0xff00 lookup 102 proto 201  (flowpin's: pinned flows of link isp2)",
				"route":           "default via 198.51.100.1 dev wan2 table 102",
				"nexthop":         "via 198.51.100.1 dev wan2",
				"nft postrouting": "ct mark already holds a link (0x200): unchanged",
				"nat":             "the flow is already translated: source 198.51.100.2",
			},
		},
		{
			name: "reply from a link", p: Packet{Src: far, Dst: lanHost, Iif: "wan2", Proto: unix.IPPROTO_TCP, Sport: 50000, Dport: 22},
			setup:   func(f *fakeKernel) { f.flows = append(f.flows, inbound) },
			summary: "leaves by lan (not a flowpin link) with source 198.18.0.1",
			steps: map[string]string{
				"conntrack":       "existing flow (reply direction of 10.0.0.5:22 -> 198.18.0.1:50000), ct mark 0x200: pinned to link isp2 (wan2)",
				"nft prerouting":  "arrives on wan2, link isp2: the flow is already pinned to isp2; the mark is not restored onto packets from a link, so main routes it",
				"ip rule":         "1300: from all lookup main suppress_prefixlength 0 proto 201  (flowpin's: connected and more specific routes in main, before the balance table)",
				"route":           "10.0.0.0/24 dev lan table main src 10.0.0.1",
				"nexthop":         "directly connected on lan",
				"nft postrouting": "lan is not a flowpin link: no save, no NAT by flowpin",
			},
		},
		{
			// A flow from before apply: no mark, so main routes it.
			name: "flow from before apply", p: Packet{Src: lanHost, Dst: far, Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40002, Dport: 443},
			setup: func(f *fakeKernel) {
				old := pinned
				old.Orig.Sport, old.Reply.Dport, old.Mark = 40002, 40002, 0
				f.flows = append(f.flows, old)
			},
			summary: "leaves by ",
			steps: map[string]string{
				"conntrack":      "not pinned to a link yet",
				"nft prerouting": "an established flow without a link (from before apply): meta mark set to 0xff00, routed by the main table",
				"ip rule":        "1301: from all fwmark 0xff00/0xff00 lookup main",
			},
		},
		{
			name: "forwarding off", p: newFlow,
			setup:   func(f *fakeKernel) { f.sysctls["net/ipv4/ip_forward"] = "0" },
			summary: "not routed: net.ipv4.ip_forward is 0 in this namespace",
			steps: map[string]string{
				"route": "ip route get 198.18.0.1 from 10.0.0.5 iif lan ipproto tcp sport 40000 dport 443: ip route get",
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, cfg, _ := dualWAN(t)
			if c.setup != nil {
				c.setup(f)
			}
			e, err := f.kernel().Explain(cfg, c.p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(e.Summary(), c.summary) {
				t.Errorf("summary %q, want %q\n%s", e.Summary(), c.summary, steps(e))
			}
			if e.Pinned != c.pinned || e.HashPick != c.hash {
				t.Errorf("pinned %v hash pick %v, want %v %v", e.Pinned, e.HashPick, c.pinned, c.hash)
			}
			got := map[string]string{}
			for _, s := range e.Steps {
				got[s.Stage] = s.Text
			}
			for stage, w := range c.steps {
				if !strings.Contains(got[stage], w) {
					t.Errorf("stage %s: %q, want it to contain %q\n%s", stage, got[stage], w, steps(e))
				}
			}
			if c.name == "new flow" {
				// The hash pick is the kernel's (here the fake's) own.
				a, err := f.RouteGet(rules.Query{Dst: far, Src: lanHost, Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40000, Dport: 443})
				if err != nil || a.Dev != e.Dev || a.Gw != e.Gw {
					t.Errorf("explain says %s via %s, route get says %v (%v)", e.Dev, e.Gw, a, err)
				}
			}
		})
	}
}

// Explain names the traffic rule, the policy and its tier, and for a
// sticky source the link it is stuck to.
func TestExplainPolicies(t *testing.T) {
	f, c := policyFake(t)
	f.sticky = map[string]stuck{"stuck4_bank 10.0.0.5": {0x200, 9 * time.Minute}}
	lanHost, far := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("198.18.0.1")
	for _, tc := range []struct {
		name                   string
		p                      Packet
		dev, rule, policy, stk string
		tier                   int
		step                   string
	}{
		{"rule to a policy", Packet{Src: lanHost, Dst: far, Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40000, Dport: 443}, "wan2", "https", "isp2-first", "", 1,
			"rule https (rules[0]) matches: policy isp2-first"},
		{"sticky source", Packet{Src: lanHost, Dst: far, Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40000, Dport: 8443}, "wan2", "bank", "default", "isp2", 1,
			"source 10.0.0.5 is stuck to link isp2 for 9m0s more (map stuck4_bank)"},
		{"no rule", Packet{Src: lanHost, Dst: far, Iif: "lan", Proto: unix.IPPROTO_UDP, Sport: 40000, Dport: 53}, "", "", "default", "", 0,
			"no traffic rule matches: policy default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := f.kernel().Explain(c, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if (tc.dev != "" && e.Dev != tc.dev) || e.Rule != tc.rule || e.Policy != tc.policy || e.StuckTo != tc.stk || (tc.tier != 0 && e.Tier != tc.tier) {
				t.Errorf("dev %s rule %q policy %q stuck %q tier %d; want %s %q %q %q %d\n%s", e.Dev, e.Rule, e.Policy, e.StuckTo, e.Tier, tc.dev, tc.rule, tc.policy, tc.stk, tc.tier, steps(e))
			}
			if !strings.Contains(steps(e), tc.step) {
				t.Errorf("no %q in\n%s", tc.step, steps(e))
			}
		})
	}
}

// policyFake is the dual-WAN router with a policy (isp2 first, then isp1)
// that https takes, and a sticky rule on the default policy, as applied.
func policyFake(t *testing.T) (*fakeKernel, *config.Config) {
	c := configtest.MustParse(t, configtest.TwoLinks)
	c.Policies = append(c.Policies, config.Policy{Name: "isp2-first", Tiers: [][]int{{1}, {0}}, LastResort: config.Unreachable, Failback: config.Keep})
	c.Rules = []config.Rule{
		{Name: "https", Proto: config.TCP, DstPorts: []config.PortRange{{Lo: 443, Hi: 443}}, Policy: "isp2-first", Target: 1},
		{Name: "bank", Proto: config.TCP, DstPorts: []config.PortRange{{Lo: 8443, Hi: 8443}}, Policy: "default", Target: 0, Sticky: 10 * time.Minute},
	}
	f, _ := applied(t, c, map[string]rules.Iface{
		"lan":  {Name: "lan", Index: 2, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}},
		"wan1": {Name: "wan1", Index: 3, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Index: 4, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}},
	})
	return f, c
}

// Verify checks each policy's route: as applied they pass; without the
// policy's fwmark rule its flows take the default route and it fails.
func TestVerifyPolicies(t *testing.T) {
	f, c := policyFake(t)
	rep, err := f.kernel().Verify(c, VerifyOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	got := report(rep.Checks)
	for _, w := range []string{"ok   policy default: tier 1 is active", "ok   policy isp2-first: tier 1 is active: new flows leave by wan2"} {
		if !strings.Contains(got, w) {
			t.Errorf("no %q in\n%s", w, got)
		}
	}
	f.delRule(1302)
	rep, err = f.kernel().Verify(c, VerifyOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := report(rep.Checks); !strings.Contains(got, "FAIL policy isp2-first: new flows leave by wan") {
		t.Errorf("policy rule removed, but:\n%s", got)
	}
}

// backupFake is the dual-WAN router with isp2 a backup (tier 2) and a
// policy that names isp1 alone, as applied.
func backupFake(t *testing.T) (*fakeKernel, *config.Config) {
	t.Helper()
	c := configtest.MustParse(t, configtest.TwoLinks+"    tier: 2\n"+`policies:
  - {name: isp1-only, tiers: [[isp1]]}
rules:
  - {name: web, proto: tcp, dst_ports: [443], policy: isp1-only}
`)
	f, _ := applied(t, c, map[string]rules.Iface{
		"lan":  {Name: "lan", Index: 2, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}},
		"wan1": {Name: "wan1", Index: 3, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Index: 4, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}},
	})
	return f, c
}

// A backup tier as applied verifies clean: new flows reach the active
// tier's links only, and the standby link, usable as it is, takes none.
// Had the multipath route taken it in, verify says so.
func TestVerifyBackupTier(t *testing.T) {
	f, c := backupFake(t)
	rep, err := f.kernel().Verify(c, VerifyOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() != 0 {
		t.Fatalf("verify right after apply with a tier-2 link: %d failed:\n%s", rep.Failed(), report(rep.Checks))
	}
	if got := report(rep.Checks); !strings.Contains(got, "ok   new flows: tcp to 198.18.0.1:443 from 64 source ports: isp1 64") {
		t.Errorf("spread check:\n%s", got)
	}
	r := f.route(t, 100, "0.0.0.0/0")
	r.Gw, r.Dev = netip.Addr{}, ""
	r.Nexthops = []rules.Nexthop{{Dev: "wan1", Gw: netip.MustParseAddr("192.0.2.1"), Weight: 1}, {Dev: "wan2", Gw: netip.MustParseAddr("198.51.100.1"), Weight: 1}}
	rep, err = f.kernel().Verify(c, VerifyOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := report(rep.Checks); !strings.Contains(got, "FAIL new flows:") || !strings.Contains(got, "isp2 (standby)") {
		t.Errorf("the standby link in the multipath route, but:\n%s", got)
	}
}

// verify looks for foreign routes in every table flowpin owns, as apply
// guards them: a policy's table too.
func TestVerifyForeignRouteInPolicyTable(t *testing.T) {
	f, c := backupFake(t)
	d, err := plan.Plan(c, f.ifaces)
	if err != nil {
		t.Fatal(err)
	}
	var pt plan.Table
	for _, tb := range d.Tables() {
		if tb.Owner == "policy isp1-only" {
			pt = tb
		}
	}
	if pt.ID == 0 {
		t.Fatalf("no table of policy isp1-only in %v", d.Tables())
	}
	f.routes = append(f.routes, fakeRoute{Route: rules.Route{Family: rules.V4, Table: pt.ID,
		Dst: netip.MustParsePrefix("203.0.113.0/24"), Dev: "wan2", Gw: netip.MustParseAddr("198.51.100.1")}})
	rep, err := f.kernel().Verify(c, VerifyOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("FAIL table %d (policy isp1-only): holds a route flowpin does not own: 203.0.113.0/24 via 198.51.100.1 dev wan2 table %d", pt.ID, pt.ID)
	if got := report(rep.Checks); !strings.Contains(got, want) {
		t.Errorf("no %q in\n%s", want, got)
	}
}

// With a daemon running, verify plans as it did: a link it took out of
// the multipath route (an operator's drain here) is no drift and takes no
// new flows, and the report says why. Checked against the config alone,
// the same kernel fails; and a real drift beside a daemon is fixed by a
// reload, since apply refuses to run beside it.
func TestVerifyAsTheDaemonPlans(t *testing.T) {
	c := configtest.MustParse(t, configtest.TwoLinks)
	f, _ := applied(t, c, map[string]rules.Iface{
		"lan":  {Name: "lan", Index: 2, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}},
		"wan1": {Name: "wan1", Index: 3, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Index: 4, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}},
	})
	down := map[string]string{"isp2": "drained by operator since 10:32:05"}
	d, err := plan.With(c, f.ifaces, plan.Options{Down: down})
	if err != nil {
		t.Fatal(err)
	}
	var balance rules.Route
	for _, r := range d.Routing.Routes {
		if r.Table == c.BalanceTable && r.Dst.Bits() == 0 && r.Family == rules.V4 {
			balance = r
		}
	}
	f.route(t, c.BalanceTable, "0.0.0.0/0").Route = balance

	rep, err := f.kernel().Verify(c, VerifyOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := report(rep.Checks); !strings.Contains(got, "FAIL route") || !strings.Contains(got, "FAIL new flows:") || !strings.Contains(got, "fix: flowpin apply") {
		t.Errorf("isp2 out of the route, checked against the config alone:\n%s", got)
	}

	rep, err = f.kernel().Verify(c, VerifyOptions{NoProbe: true, Daemon: &DaemonIntent{Down: down}})
	if err != nil {
		t.Fatal(err)
	}
	got := report(rep.Checks)
	if rep.Failed() != 0 {
		t.Errorf("isp2 out of the route as the daemon planned it: %d failed:\n%s", rep.Failed(), got)
	}
	for _, want := range []string{
		"ok   daemon: flowpin run runs here; checked against its plan: isp2 out of the IPv4 multipath route (drained by operator since 10:32:05)",
		"ok   new flows: tcp to 198.18.0.1:443 from 64 source ports: isp1 64",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}

	rep, err = f.kernel().Verify(c, VerifyOptions{NoProbe: true, Daemon: &DaemonIntent{}})
	if err != nil {
		t.Fatal(err)
	}
	got = report(rep.Checks)
	if !strings.Contains(got, "FAIL route") || !strings.Contains(got, "fix: flowpin reload") || strings.Contains(got, "fix: flowpin apply") {
		t.Errorf("a daemon that has every link in, and a route without isp2:\n%s", got)
	}

	// Every link out by the daemon (an operator's forced down): the
	// kernel is as planned, but new flows have no link, and the fix is
	// the operator's, not a reload.
	both := map[string]string{"isp1": "down by operator since 10:32:05", "isp2": "down by operator since 10:32:06"}
	d, err = plan.With(c, f.ifaces, plan.Options{Down: both})
	if err != nil {
		t.Fatal(err)
	}
	f.routes = slices.DeleteFunc(f.routes, func(r fakeRoute) bool { return r.Owned })
	for _, r := range d.Routing.Routes {
		f.routes = append(f.routes, fakeRoute{Route: r, Owned: true})
	}
	rep, err = f.kernel().Verify(c, VerifyOptions{NoProbe: true, Daemon: &DaemonIntent{Down: both}})
	if err != nil {
		t.Fatal(err)
	}
	got = report(rep.Checks)
	if rep.Failed() != 1 || !strings.Contains(got, "FAIL new flows: flowpin run has every link out of the multipath route") ||
		!strings.Contains(got, "fix: flowpin link NAME auto") || !strings.Contains(got, "ok   routing") {
		t.Errorf("every link out by the daemon: %d failed:\n%s", rep.Failed(), got)
	}
}
