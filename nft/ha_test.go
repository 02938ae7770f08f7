package nft

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNATSourceAndGuard(t *testing.T) {
	s := Spec{Mask: 0xff00, Guard: true, V6: true, Links: []Link{
		{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true, NATSource: netip.MustParseAddr("192.0.2.2")},
		{Name: "isp2", Iface: "wan2", Mark: 0x200, NAT: true, NATSource: netip.MustParseAddr("2001:db8:2::2")},
		{Name: "isp3", Iface: "wan3", Mark: 0x300, NAT: true},
		{Name: "lan-ish", Iface: "wan4", Mark: 0x400, NATSource: netip.MustParseAddr("192.0.2.9")}, // no nat: no SNAT
	}}
	out := s.Render()
	for _, want := range []string{
		"map nat_source4 {\n\t\ttype ifname : ipv4_addr\n\t\telements = { \"wan1\" : 192.0.2.2 }\n\t}",
		"map nat_source6 {\n\t\ttype ifname : ipv6_addr\n\t\telements = { \"wan2\" : 2001:db8:2::2 }\n\t}",
		"set nat_oif {\n\t\ttype ifname\n\t\telements = { \"wan1\", \"wan2\", \"wan3\" }\n\t}",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	var pre, nat []string
	for _, r := range s.Planned() {
		switch r.Chain {
		case "prerouting":
			pre = append(pre, r.Text)
		case "nat":
			nat = append(nat, r.Text)
		}
	}
	// The guard comes first, before even IPv6's exemptions; the SNATs
	// before the masquerade that takes the other links and families.
	if len(pre) == 0 || pre[0] != "tcp flags & (fin|syn|rst|ack) != syn ct state new counter drop" {
		t.Errorf("prerouting starts %q", pre)
	}
	wantNAT := []string{
		"meta nfproto ipv6 jump v6_exempt",
		"meta nfproto ipv4 fib saddr type != local snat ip to oifname map @nat_source4",
		"meta nfproto ipv6 fib saddr type != local snat ip6 to oifname map @nat_source6",
		"oifname @nat_oif masquerade",
	}
	if strings.Join(nat, "\n") != strings.Join(wantNAT, "\n") {
		t.Errorf("nat chain\n got: %q\nwant: %q", nat, wantNAT)
	}
	// Without ha and nat_source, none of it.
	plain := Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true}}}.Render()
	for _, no := range []string{"nat_source", "ha guard", "snat ip"} {
		if strings.Contains(plain, no) {
			t.Errorf("a plain table has %q:\n%s", no, plain)
		}
	}
}
