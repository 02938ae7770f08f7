package use

import (
	"net/netip"
	"testing"

	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/rules"
)

// useConfig: isp1 dual-stack; lte IPv4, with an IPv6 gateway from router
// advertisements (none yet on some rows).
const useConfig = `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: '2001:db8:1::1'}
  - {name: lte, interface: wwan0, gateway: 198.51.100.1, gateway6: auto}
  - {name: dsl, interface: wan3, gateway: 203.0.113.1}
`

// applied is what an apply of useConfig left for link (table 100+i+1,
// mark (i+1)<<8): its fwmark rule and default route in each family asked.
func applied(s *rules.State, i int, v4, v6 bool) {
	table, mark := 101+i, uint32(i+1)<<8
	for _, f := range []struct {
		on  bool
		fam int
		all string
	}{{v4, rules.V4, "0.0.0.0/0"}, {v6, rules.V6, "::/0"}} {
		if !f.on {
			continue
		}
		s.Rules = append(s.Rules, rules.Rule{Family: f.fam, Priority: 1100 + i, Mark: mark, Mask: 0xff00, Table: table, SuppressPrefixlen: -1})
		s.Routes = append(s.Routes, rules.Route{Family: f.fam, Table: table, Dst: netip.MustParsePrefix(f.all), Dev: "x"})
	}
}

func TestFamilies(t *testing.T) {
	c := configtest.MustParse(t, useConfig)
	records := nft.Records{Links: []nft.LinkRecord{{Name: "isp1", Mark: 0x100, Table: 101}, {Name: "lte", Mark: 0x200, Table: 102}, {Name: "dsl", Mark: 0x300, Table: 103}}}
	up := map[string]rules.Iface{
		"wan1":  {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")}},
		"wwan0": {Name: "wwan0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("2001:db8:2::2/64")}, Gateways: []netip.Addr{netip.MustParseAddr("fe80::1")}},
		"wan3":  {Name: "wan3", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.2/24")}},
	}
	noRA, down := map[string]rules.Iface{}, map[string]rules.Iface{}
	for k, v := range up {
		noRA[k], down[k] = v, v
	}
	w := up["wwan0"]
	w.Gateways = nil
	noRA["wwan0"] = w
	w = up["wwan0"]
	w.Up = false
	down["wwan0"] = w

	for _, tc := range []struct {
		name    string
		link    int
		records nft.Records
		ifaces  map[string]rules.Iface
		owned   func(*rules.State)
		want4   string
		want6   string
		err     string
	}{
		{name: "both families", link: 1, records: records, ifaces: up,
			owned: func(s *rules.State) { applied(s, 1, true, true) }},
		{name: "an IPv4-only link", link: 2, records: records, ifaces: up,
			owned: func(s *rules.State) { applied(s, 2, true, false) },
			want6: "no gateway6 in f.yaml"},
		{name: "no router advertisement yet", link: 1, records: records, ifaces: noRA,
			owned: func(s *rules.State) {
				applied(s, 1, true, false)
				s.Rules = append(s.Rules, rules.Rule{Family: rules.V6, Priority: 1101, Mark: 0x200, Mask: 0xff00, Table: 102, SuppressPrefixlen: -1})
			},
			want6: "interface wwan0 has no IPv6 default route in main to take the gateway from yet (router advertisements)"},
		{name: "IPv6 usable but not applied yet", link: 1, records: records, ifaces: up,
			owned: func(s *rules.State) { applied(s, 1, true, false) },
			want6: "no ip rule for its mark 0x200/0xff00 yet: flowpin apply"},
		{name: "IPv6 rule without its route", link: 1, records: records, ifaces: up,
			owned: func(s *rules.State) {
				applied(s, 1, true, false)
				s.Rules = append(s.Rules, rules.Rule{Family: rules.V6, Priority: 1101, Mark: 0x200, Mask: 0xff00, Table: 102, SuppressPrefixlen: -1})
			},
			want6: "its table 102 has no default route yet: flowpin apply"},
		{name: "another link's rule and route do not count", link: 1, records: records, ifaces: up,
			owned: func(s *rules.State) { applied(s, 1, true, false); applied(s, 0, true, true) },
			want6: "no ip rule for its mark 0x200/0xff00 yet: flowpin apply"},
		{name: "never applied", link: 1, records: nft.Records{Links: records.Links[:1]}, ifaces: up,
			owned: func(s *rules.State) { applied(s, 0, true, true) },
			err:   "link lte is not applied in this network namespace (flowpin's table has no record of it): flowpin apply -c f.yaml first"},
		{name: "applied with another mark", link: 1, records: nft.Records{Links: []nft.LinkRecord{{Name: "lte", Mark: 0x500, Table: 102}}}, ifaces: up,
			owned: func(s *rules.State) { applied(s, 1, true, true) },
			err:   "link lte is applied with mark 0x500 table 102, and f.yaml gives it mark 0x200 table 102: flowpin apply -c f.yaml first"},
		{name: "interface down", link: 1, records: records, ifaces: down,
			owned: func(s *rules.State) {
				applied(s, 0, true, true)
				s.Rules = append(s.Rules, rules.Rule{Family: rules.V4, Priority: 1101, Mark: 0x200, Mask: 0xff00, Table: 102, SuppressPrefixlen: -1})
			},
			err: "link lte cannot carry traffic now (IPv4: interface wwan0 is down; IPv6: interface wwan0 is down)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := plan.With(c, tc.ifaces, plan.Options{MissingOK: true})
			if err != nil {
				t.Fatal(err)
			}
			var owned rules.State
			tc.owned(&owned)
			fams, err := families(c, tc.link, d, tc.records, owned)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("err = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fams[0].Why != tc.want4 || fams[1].Why != tc.want6 {
				t.Errorf("IPv4 %q, IPv6 %q; want %q, %q", fams[0].Why, fams[1].Why, tc.want4, tc.want6)
			}
			if fams[0].Name != "IPv4" || fams[1].Name != "IPv6" {
				t.Errorf("names %q, %q", fams[0].Name, fams[1].Name)
			}
		})
	}
}
