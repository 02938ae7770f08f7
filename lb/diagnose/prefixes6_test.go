package diagnose

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/rules"
)

// prefixesFake: each ISP routes a /56 to the site, the LAN holds an
// address of each; isp2 also has NAT66.
func prefixesFake(t *testing.T) *fakeKernel {
	t.Helper()
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', nat: true, prefixes6: [2001:db8:2:100::/56]}
`)
	f, _ := applied(t, c, map[string]rules.Iface{
		"lan":  {Name: "lan", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:1:100::1/64"), netip.MustParsePrefix("2001:db8:2:100::1/64")}},
		"wan1": {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::2/64")}},
		"wan2": {Name: "wan2", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:2::2/64")}},
	})
	return f
}

var prefixFlow = Packet{Src: netip.MustParseAddr("2001:db8:1:100::2"), Dst: netip.MustParseAddr("2001:2::1"), Iif: "lan", Proto: unix.IPPROTO_TCP, Sport: 40000, Dport: 443}

func stepsOf(e *Explanation) map[string]string {
	m := map[string]string{}
	for _, s := range e.Steps {
		m[s.Stage] = s.Text
	}
	return m
}

// Explain follows a flow from isp1's prefix: out of isp1, by the prefix
// rule, untranslated; with isp1 down (the daemon's rules and table), out
// of isp2, translated with its host bits.
func TestExplainPrefixes6(t *testing.T) {
	f := prefixesFake(t)
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', nat: true, prefixes6: [2001:db8:2:100::/56]}
`)
	e, err := f.kernel().Explain(c, prefixFlow)
	if err != nil {
		t.Fatal(err)
	}
	st := stepsOf(e)
	for stage, want := range map[string]string{
		"nft classify": "source 2001:db8:1:100::2 is in 2001:db8:1:100::/56, link isp1's own prefix (prefixes6): no traffic rule applies",
		"ip rule":      "1399: from 2001:db8:1:100::/56 lookup 101 proto 201  (flowpin's: flows from link isp1's own prefix 2001:db8:1:100::/56 (prefixes6) leave by it)",
		"nat":          "2001:db8:1:100::/56 is link isp1's own prefix: it leaves untranslated, no masquerade (source 2001:db8:1:100::2)",
	} {
		if !strings.Contains(st[stage], want) {
			t.Errorf("up, stage %s: %q, want %q\n%s", stage, st[stage], want, steps(e))
		}
	}
	if want := "leaves by wan1 via 2001:db8:1::1 (link isp1) with source 2001:db8:1:100::2"; !strings.HasPrefix(e.Summary(), want) {
		t.Errorf("up: %q, want %q", e.Summary(), want)
	}

	// isp1 down, as the daemon leaves it: no prefix rule, the balance
	// route by isp2, the translation in the table.
	down, err := plan.With(c, f.ifaces, plan.Options{Down6: map[string]string{"isp1": "down"}})
	if err != nil {
		t.Fatal(err)
	}
	f.rules = slices.DeleteFunc(f.rules, func(r rules.RuleInfo) bool {
		return r.Family == rules.V6 && r.Priority == 1000+plan.OffPrefix && r.Src == netip.MustParsePrefix("2001:db8:1:100::/56")
	})
	bal := f.route(t, 100, "::/0")
	bal.Route = down.Routing.Routes[slices.IndexFunc(down.Routing.Routes, func(r rules.Route) bool { return r.Table == 100 && r.Family == rules.V6 })]
	f.nft = down.NFT.Current()
	e, err = f.kernel().Explain(c, prefixFlow)
	if err != nil {
		t.Fatal(err)
	}
	want := "link isp1 is down: 2001:db8:1:100::/56 is translated 1:1 onto link isp2's 2001:db8:2:100::/56, host bits kept: source becomes 2001:db8:2:100::2"
	if got := stepsOf(e)["nat"]; !strings.Contains(got, want) {
		t.Errorf("down, nat: %q, want %q\n%s", got, want, steps(e))
	}
	if want := "leaves by wan2 via 2001:db8:2::1 (link isp2) with source 2001:db8:2:100::2"; !strings.HasPrefix(e.Summary(), want) {
		t.Errorf("down: %q, want %q\n%s", e.Summary(), want, steps(e))
	}
}

// Verify asks where a LAN flow from each prefix goes, and names the rule
// that sends it elsewhere.
func TestVerifyPrefixes6(t *testing.T) {
	f := prefixesFake(t)
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', nat: true, prefixes6: [2001:db8:2:100::/56]}
`)
	check := func(name string) VerifyCheck {
		t.Helper()
		r, err := f.kernel().Verify(c, VerifyOptions{NoProbe: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range r.Checks {
			if ch.Name == name {
				return ch
			}
		}
		t.Fatalf("no check %q", name)
		return VerifyCheck{}
	}
	ch := check("prefix 2001:db8:1:100::/56")
	if !ch.OK || !strings.Contains(ch.Detail, "a flow from it leaves by link isp1, wan1 via 2001:db8:1::1 (ip route get 2001:2::1 from 2001:db8:1:100::f1 iif lan)") {
		t.Errorf("isp1's prefix: %+v", ch)
	}
	if ch := check("prefix 2001:db8:2:100::/56"); !ch.OK {
		t.Errorf("isp2's prefix: %+v", ch)
	}
	// Without its rule, the prefix's flows take the balance route: half
	// of them by the other ISP.
	f.rules = slices.DeleteFunc(f.rules, func(r rules.RuleInfo) bool {
		return r.Family == rules.V6 && r.Priority == 1000+plan.OffPrefix
	})
	f.route(t, 100, "::/0").Nexthops = nil
	f.route(t, 100, "::/0").Dev, f.route(t, 100, "::/0").Gw = "wan2", netip.MustParseAddr("2001:db8:2::1")
	ch = check("prefix 2001:db8:1:100::/56")
	if ch.OK || !strings.Contains(ch.Detail, "a flow from it leaves by wan2 via 2001:db8:2::1, want link isp1 (wan1), whose ISP alone accepts it: table 100, rule 1500: from all lookup 100 proto 201") {
		t.Errorf("isp1's prefix without its rule: %+v", ch)
	}
}
