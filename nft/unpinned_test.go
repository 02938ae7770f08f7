package nft

import (
	"net/netip"
	"strings"
	"testing"
)

// chainTexts is the text of the planned rules of one chain, in order.
func chainTexts(s Spec, chain string) []string {
	var out []string
	for _, r := range s.Planned() {
		if r.Chain == chain {
			out = append(out, r.Text)
		}
	}
	return out
}

func twoModemsSpec(nat2 bool) Spec {
	return Spec{Mask: 0xff00, Main: 0xff00, Links: []Link{
		{Name: "modem1", Iface: "wan0", Mark: 0x100, NAT: true, Shared: true, Nexthop: netip.MustParseAddr("192.168.1.1"), Nexthop6: netip.MustParseAddr("2001:db8:1::1")},
		{Name: "modem2", Iface: "wan0", Mark: 0x200, NAT: nat2, Shared: true, Nexthop: netip.MustParseAddr("192.168.1.254"), Nexthop6: netip.MustParseAddr("2001:db8:1::fe")},
		{Name: "isp3", Iface: "wan3", Mark: 0x300, NAT: true},
	}}
}

// A forwarded packet of an established flow without a link is routed by
// main: the rule comes after the ct mark lookup, which ends prerouting for
// a pinned packet, so pinned packets never pass it; the box's own traffic
// (output) is left to the source rules; without a Main mark there is no
// such rule.
func TestUnpinnedToMain(t *testing.T) {
	s := twoModemsSpec(true)
	pre := chainTexts(s, "prerouting")
	const want = "ct mark & 0x0000ff00 == 0x00000000 ct state established meta mark set meta mark & 0xffff00ff | 0x0000ff00 return"
	if len(pre) != 4 || !strings.HasPrefix(pre[1], "ct mark & 0x0000ff00 vmap @by_ctmark") || !strings.HasPrefix(pre[2], "iifname vmap @by_iif") || pre[3] != want {
		t.Errorf("prerouting:\n%s\nwant the ct mark lookup, the interface lookup, then %q", strings.Join(pre, "\n"), want)
	}
	for _, r := range chainTexts(s, "output") {
		if strings.Contains(r, "established") {
			t.Errorf("output has %q", r)
		}
	}
	s.Main = 0
	for _, r := range chainTexts(s, "prerouting") {
		if strings.Contains(r, "established") {
			t.Errorf("without Main, prerouting has %q", r)
		}
	}
}

// On a shared interface a flow is pinned by next hop only while it has no
// link, and only in its original direction: never a reply, never again.
func TestSharedPinsUnmarkedOriginal(t *testing.T) {
	oif := chainTexts(twoModemsSpec(true), "oif_wan0")
	if len(oif) != 2 {
		t.Fatalf("oif_wan0: %q", oif)
	}
	for i, fam := range []string{"ip", "ip6"} {
		want := "ct mark & 0x0000ff00 == 0x00000000 ct direction original rt " + fam + " nexthop vmap @by_nexthop"
		if !strings.HasPrefix(oif[i], want) {
			t.Errorf("oif_wan0 rule %d: %q, want %q...", i, oif[i], want)
		}
	}
}

// NAT by link where the links of an interface differ; by interface where
// they agree.
func TestNATByLink(t *testing.T) {
	mixed := twoModemsSpec(false).Render()
	for _, want := range []string{`elements = { "wan3" }`, "set nat_mark {\n\t\ttype mark\n\t\telements = { 0x00000100 }", "ct mark & 0x0000ff00 @nat_mark masquerade"} {
		if !strings.Contains(mixed, want) {
			t.Errorf("mixed NAT: no %q in\n%s", want, mixed)
		}
	}
	all := twoModemsSpec(true).Render()
	if strings.Contains(all, "nat_mark") || !strings.Contains(all, `elements = { "wan0", "wan3" }`) {
		t.Errorf("all NAT: want wan0 in nat_oif and no nat_mark:\n%s", all)
	}
	none := twoModemsSpec(false)
	none.Links[0].NAT = false
	if r := none.Render(); strings.Contains(r, "nat_mark") || strings.Contains(r, `"wan0", "wan3"`) {
		t.Errorf("no NAT on wan0: want neither set to name it:\n%s", r)
	}
}
