package diagnose

import (
	"net/netip"
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/rules"
)

func verifyTestPlan(t *testing.T) (*config.Config, *plan.Desired) {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(`links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    nat: true
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    nat: true
`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := plan.Plan(c, map[string]rules.Iface{
		"wan1": {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, d
}

func details(cs []VerifyCheck) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.Name + ": " + c.Detail + " | fix: " + c.Fix + "\n")
	}
	return b.String()
}

func TestVerifyDriftChecks(t *testing.T) {
	_, d := verifyTestPlan(t)
	if got := DriftChecks(d.Routing, d.Routing); len(got) != 0 {
		t.Fatalf("no drift: want no checks, got\n%s", details(got))
	}

	cur := rules.State{Routes: d.Routing.Routes}
	var dropped rules.Rule
	for _, r := range d.Routing.Rules {
		if r.Priority == 1102 {
			dropped = r
			continue
		}
		cur.Rules = append(cur.Rules, r)
	}
	// A stale rule with flowpin's tag, and a route changed by hand.
	cur.Rules = append(cur.Rules, rules.Rule{Family: rules.V4, Priority: 1103, Mark: 0x300, Mask: 0xff00, Table: 103, SuppressPrefixlen: -1})
	cur.Routes = append([]rules.Route(nil), d.Routing.Routes...)
	for i, r := range cur.Routes {
		if r.Table == 101 && r.Dst.Bits() == 0 {
			cur.Routes[i].Gw = netip.MustParseAddr("192.0.2.99")
		}
	}
	got := details(DriftChecks(cur, d.Routing))
	for _, want := range []string{
		"rule 1102: missing: " + dropped.Command("add") + " | fix: flowpin apply",
		"missing: ip rule add pref 1102 from all fwmark 0x200/0xff00 lookup 102 proto 201",
		"rule 1103: unexpected: ip rule add pref 1103 from all fwmark 0x300/0xff00 lookup 103 proto 201",
		"differs: have ip route replace default via 192.0.2.99 dev wan1 table 101",
		"want ip route replace default via 192.0.2.1 dev wan1 table 101",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("drift: no %q in\n%s", want, got)
		}
	}
}

// planned is the spec's packet rules of one chain.
func planned(s nft.Spec, chain string) []nft.PlannedRule {
	var out []nft.PlannedRule
	for _, r := range s.Planned() {
		if r.Chain == chain {
			out = append(out, r)
		}
	}
	return out
}

func TestVerifyNFTChecks(t *testing.T) {
	_, d := verifyTestPlan(t)
	if len(planned(d.NFT, "prerouting")) != 4 || len(planned(d.NFT, "output")) != 3 || len(planned(d.NFT, "nat")) != 1 || len(planned(d.NFT, "restore_isp1")) != 1 {
		t.Fatalf("planned rules: %v", d.NFT.Planned())
	}
	if got := NFTChecks(d.NFT, d.NFT.Current()); len(got) != 0 {
		t.Fatalf("same table: want no checks, got\n%s", details(got))
	}
	if got := details(NFTChecks(d.NFT, &nft.Current{})); !strings.Contains(got, "missing: table inet flowpin") {
		t.Errorf("no table: got\n%s", got)
	}

	cur := d.NFT.Current()
	restore := planned(d.NFT, "restore_isp1")[0]
	cur.Chains["restore_isp1"] = []string{}
	cur.Chains["nat"] = append(cur.Chains["nat"], "someone's #12345678")
	got := details(NFTChecks(d.NFT, cur))
	for _, w := range []string{
		"nft chain restore_isp1: missing: nft add rule inet flowpin restore_isp1 " + restore.Text,
		"counter meta mark set meta mark & 0xffff00ff | 0x00000100",
		`nft chain nat: unexpected: rule with comment "someone's #12345678"`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("nft drift: no %q in\n%s", w, got)
		}
	}

	cur = d.NFT.Current()
	cur.Chains["output"][1], cur.Chains["output"][2] = cur.Chains["output"][2], cur.Chains["output"][1]
	delete(cur.Chains, "nat")
	cur.Chains["mine"] = []string{}
	got = details(NFTChecks(d.NFT, cur))
	for _, w := range []string{"nft chain nat: missing: chain inet flowpin nat", "nft chain mine: unexpected: chain inet flowpin mine"} {
		if !strings.Contains(got, w) {
			t.Errorf("chains: no %q in\n%s", w, got)
		}
	}
	delete(cur.Chains, "mine")
	cur.Chains["nat"] = d.NFT.Current().Chains["nat"]
	if got := details(NFTChecks(d.NFT, cur)); got != "nft chain output: rules in another order than planned | fix: flowpin apply\n" {
		t.Errorf("order: got\n%s", got)
	}
}

// The planned rules are compared as values, not as text read back out of
// the rendered script: a comment nft writes with escapes (a quote or a
// backslash in a link's name) is found in the kernel as it is.
func TestVerifyNFTChecksQuotedComments(t *testing.T) {
	s := nft.Spec{Mask: 0xff00, Links: []nft.Link{{Name: `isp"1`, Iface: "wan1", Mark: 0x100, NAT: true}, {Name: `isp\2`, Iface: "wan2", Mark: 0x200}}}
	if got := NFTChecks(s, s.Current()); len(got) != 0 {
		t.Errorf("the table as planned: want no checks, got\n%s", details(got))
	}
}

// Records are bookkeeping: verify takes them as found, in any order and
// whatever they hold, and still notices a table that differs in anything
// else.
func TestVerifyNFTRecordsAsFound(t *testing.T) {
	f, _, d := dualWAN(t)
	cur := d.NFT.Current()
	cur.Chains["state"] = []string{"link isp2 mark=0x200 table=102", "sysctl net/ipv4/conf/wan1/rp_filter=1", "from a newer flowpin", "link isp1 mark=0x100 table=101"}
	cur.Records = nft.DecodeRecords(cur.Chains["state"])
	f.nft = cur
	r := &VerifyReport{}
	if err := f.kernel().verifyNFT(r, d); err != nil {
		t.Fatal(err)
	}
	if len(r.Checks) != 1 || !r.Checks[0].OK || r.Checks[0].Detail != "table inet flowpin as planned (27 rules)" {
		t.Errorf("records in another order: got\n%s", details(r.Checks))
	}

	cur.Sets = append(cur.Sets, "someone's")
	r = &VerifyReport{}
	if err := f.kernel().verifyNFT(r, d); err != nil {
		t.Fatal(err)
	}
	if got := details(r.Checks); !strings.Contains(got, "nft table: a chain's type, hook or priority differs from the plan") {
		t.Errorf("a set that is not planned: got\n%s", got)
	}
}

func TestVerifyShadowChecks(t *testing.T) {
	c, d := verifyTestPlan(t)
	own := func(p int) rules.RuleInfo {
		return rules.RuleInfo{Priority: p, Action: rules.ActionToTable, Table: 101, SuppressPrefixlen: -1, Protocol: rules.Protocol}
	}
	base := []rules.RuleInfo{
		{Priority: 0, Action: rules.ActionToTable, Table: 255, SuppressPrefixlen: -1},
		own(1000), own(1100), own(1500),
		{Priority: 32766, Action: rules.ActionToTable, Table: 254, SuppressPrefixlen: -1},
	}
	got := ShadowChecks(c, d, base)
	if len(got) != 1 || !got[0].OK {
		t.Fatalf("only the kernel's and flowpin's rules: want one passing check, got\n%s", details(got))
	}

	cases := []struct {
		name string
		rule rules.RuleInfo
		want string // "" : not reported
	}{
		{"everything to main", rules.RuleInfo{Priority: 100, Action: rules.ActionToTable, Table: 254, SuppressPrefixlen: -1},
			`"100: from all lookup main" (not flowpin's) comes before flowpin's rules (1000-1500) and catches their traffic`},
		{"main suppress 0 (wg-quick style)", rules.RuleInfo{Priority: 900, Action: rules.ActionToTable, Table: 254, SuppressPrefixlen: 0},
			"every route more specific than /0"},
		{"from a link's address", rules.RuleInfo{Priority: 1300, Action: rules.ActionToTable, Table: 7, SuppressPrefixlen: -1, Src: netip.MustParsePrefix("198.51.100.0/24")},
			"among flowpin's rules"},
		{"blackhole", rules.RuleInfo{Priority: 50, Action: rules.ActionBlackhole, SuppressPrefixlen: -1}, "50: from all blackhole"},
		{"flowpin's mark bits", rules.RuleInfo{Priority: 60, Action: rules.ActionToTable, Table: 7, Mark: 0x100, Mask: 0xff00, SuppressPrefixlen: -1},
			"selects on mark bits 0xff00 that flowpin owns"},
		{"one destination", rules.RuleInfo{Priority: 100, Action: rules.ActionToTable, Table: 7, SuppressPrefixlen: -1, Dst: netip.MustParsePrefix("10.0.0.0/8")}, ""},
		{"one input interface", rules.RuleInfo{Priority: 100, Action: rules.ActionToTable, Table: 7, SuppressPrefixlen: -1, Iif: "vpn0"}, ""},
		{"another program's mark bit", rules.RuleInfo{Priority: 100, Action: rules.ActionToTable, Table: 7, Mark: 1, Mask: 1, SuppressPrefixlen: -1}, ""},
		{"another source", rules.RuleInfo{Priority: 100, Action: rules.ActionToTable, Table: 7, SuppressPrefixlen: -1, Src: netip.MustParsePrefix("10.9.0.0/16")}, ""},
		{"after flowpin", rules.RuleInfo{Priority: 2000, Action: rules.ActionToTable, Table: 254, SuppressPrefixlen: -1}, ""},
	}
	for _, tc := range cases {
		all := append([]rules.RuleInfo{tc.rule}, base...)
		got := ShadowChecks(c, d, all)
		failed := !got[0].OK
		switch {
		case tc.want == "" && failed:
			t.Errorf("%s: want no report, got\n%s", tc.name, details(got))
		case tc.want != "" && (!failed || !strings.Contains(got[0].Detail, tc.want)):
			t.Errorf("%s: want a failed check saying %q, got\n%s", tc.name, tc.want, details(got))
		case tc.want != "" && !strings.Contains(got[0].Fix, "ip rule del pref"):
			t.Errorf("%s: fix %q does not say how", tc.name, got[0].Fix)
		}
	}
}

func TestVerifyMarkWriterChecks(t *testing.T) {
	c, _ := verifyTestPlan(t)
	if got := MarkWriterChecks(c, nil); len(got) != 1 || !got[0].OK {
		t.Fatalf("no writers: %s", details(got))
	}
	got := MarkWriterChecks(c, []nft.MarkWriter{{Family: "ip", Table: "fault", Chain: "pre", Handle: 3, Hook: "prerouting", What: "meta mark", Bits: 0xffffffff}})
	if len(got) != 1 || got[0].OK || !strings.Contains(got[0].Detail, "sets meta mark bits 0xff00") || got[0].Fix != "nft delete rule ip fault pre handle 3, or make it keep bits 0xff00 (e.g. meta mark set meta mark & 0xffff00ff | VALUE)" {
		t.Errorf("writer: %s", details(got))
	}
}

// TestExplainMatchedRule: naming the rule behind a kernel answer follows
// the kernel's order, goto, and suppress_prefixlength.
func TestExplainMatchedRule(t *testing.T) {
	src := netip.MustParsePrefix("198.51.100.2/32")
	to := func(p, table, suppress int) rules.RuleInfo {
		return rules.RuleInfo{Priority: p, Action: rules.ActionToTable, Table: table, SuppressPrefixlen: suppress}
	}
	from := func(r rules.RuleInfo) rules.RuleInfo { r.Src = src; return r }
	mark := func(r rules.RuleInfo) rules.RuleInfo { r.Mark, r.Mask = 0x200, 0xff00; return r }
	layout := []rules.RuleInfo{
		to(0, 255, -1),
		from(to(1001, 102, 0)),
		mark(to(1101, 102, -1)),
		to(1300, 254, 0),
		from(to(1401, 102, -1)),
		to(1500, 100, -1),
		to(32766, 254, -1),
	}
	dst := netip.MustParseAddr("198.18.0.1")
	cases := []struct {
		name        string
		rules       []rules.RuleInfo
		pkt         rules.Packet
		table, plen int
		want        int // priority, -1: none
	}{
		{"own subnet from own address", layout, rules.Packet{Src: src.Addr(), Dst: netip.MustParseAddr("198.51.100.1")}, 102, 24, 1001},
		{"default from own address: 1001 suppressed", layout, rules.Packet{Src: src.Addr(), Dst: dst}, 102, 0, 1401},
		{"pinned by mark", layout, rules.Packet{Dst: dst, Mark: 0x200}, 102, 0, 1101},
		{"mark outside the mask bits", layout, rules.Packet{Dst: dst, Mark: 0x1}, 100, 0, 1500},
		{"LAN route from main", layout, rules.Packet{Dst: netip.MustParseAddr("10.77.0.2")}, 254, 24, 1300},
		{"goto skips", append([]rules.RuleInfo{{Priority: 10, Action: rules.ActionGoto, Goto: 1500, SuppressPrefixlen: -1}}, layout...), rules.Packet{Src: src.Addr(), Dst: dst}, 100, 0, 1500},
		{"no rule for that table", layout, rules.Packet{Dst: dst}, 77, 0, -1},
	}
	for _, tc := range cases {
		r, ok := MatchedRule(tc.rules, tc.pkt, tc.table, tc.plen)
		got := -1
		if ok {
			got = r.Priority
		}
		if got != tc.want {
			t.Errorf("%s: matched rule %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestExplainSummary(t *testing.T) {
	e := &Explanation{Dev: "wan2", Gw: netip.MustParseAddr("198.51.100.1"), Link: "isp2", Source: netip.MustParseAddr("198.51.100.2"), HashPick: true}
	if got, want := e.Summary(), "leaves by wan2 via 198.51.100.1 (link isp2) with source 198.51.100.2, picked by the multipath hash"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	e = &Explanation{Error: "net.ipv4.ip_forward is 0"}
	if got := e.Summary(); got != "not routed: net.ipv4.ip_forward is 0" {
		t.Errorf("summary %q", got)
	}
}
