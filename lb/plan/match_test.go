package plan

import (
	"net/netip"
	"testing"

	"flowpin/lb/config"
)

func TestMatch(t *testing.T) {
	pfx := netip.MustParsePrefix
	rs := []config.Rule{
		{Name: "voip", Proto: config.UDP, Src: []netip.Prefix{pfx("10.9.0.0/24")}, DstPorts: []config.PortRange{{Lo: 5060, Hi: 5060}, {Lo: 10000, Hi: 20000}}, IIF: "lan0"},
		{Name: "v6only", Dst: []netip.Prefix{pfx("2001:db8::/32")}},
		{Name: "ping", Proto: config.ICMP},
		{Name: "guest", Src: []netip.Prefix{pfx("10.50.0.0/16")}},
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		f      Flow
		want   int
		unsure bool
	}{
		{"voip from lan", Flow{Src: a("10.9.0.5"), Dst: a("203.0.113.1"), Proto: 17, Dport: 15000, Iif: "lan0"}, 0, false},
		{"voip port outside", Flow{Src: a("10.9.0.5"), Dst: a("203.0.113.1"), Proto: 17, Dport: 9999, Iif: "lan0"}, -1, false},
		{"voip from the router itself", Flow{Src: a("10.9.0.5"), Dst: a("203.0.113.1"), Proto: 17, Dport: 5060}, -1, false},
		{"tcp is not voip", Flow{Src: a("10.9.0.5"), Dst: a("203.0.113.1"), Proto: 6, Dport: 5060, Iif: "lan0"}, -1, false},
		{"v6 destination", Flow{Dst: a("2001:db8::1"), Proto: 6}, 1, false},
		{"v4 never matches a v6-only rule", Flow{Dst: a("192.0.2.1"), Src: a("10.1.1.1"), Proto: 6, Dport: 80, Sport: 1000}, -1, false},
		{"icmp v4", Flow{Dst: a("192.0.2.1"), Proto: 1}, 2, false},
		{"icmpv6", Flow{Dst: a("2001:db9::1"), Proto: 58}, 2, false},
		{"guest source", Flow{Src: a("10.50.3.3"), Dst: a("192.0.2.1"), Proto: 6, Dport: 443, Sport: 5555}, 3, false},
		{"no source given", Flow{Dst: a("192.0.2.1"), Proto: 6, Dport: 443, Sport: 5555}, -1, true},
		{"no port given", Flow{Src: a("10.9.0.5"), Dst: a("203.0.113.1"), Proto: 17, Iif: "lan0"}, 3 - 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, unsure := Match(rs, tc.f)
			if got != tc.want || (unsure != "") != tc.unsure {
				t.Errorf("Match = %d, %q; want %d, unsure %v", got, unsure, tc.want, tc.unsure)
			}
		})
	}
}
