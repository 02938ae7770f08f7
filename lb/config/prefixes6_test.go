package config

import (
	"net/netip"
	"slices"
	"testing"
)

func TestPrefixes6(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`links:
  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: [2001:db8:1:100::/56, 2001:db8:1:200::/64]}
  - {name: isp2, interface: wan2, gateway6: auto, prefixes6: auto}
  - {name: isp3, interface: wan3, gateway: 192.0.2.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("2001:db8:1:100::/56"), netip.MustParsePrefix("2001:db8:1:200::/64")}
	if !slices.Equal(c.Links[0].Prefixes6, want) || c.Links[0].Prefixes6Auto {
		t.Errorf("isp1: %v auto %v", c.Links[0].Prefixes6, c.Links[0].Prefixes6Auto)
	}
	if !c.Links[1].Prefixes6Auto || len(c.Links[1].Prefixes6) != 0 || c.Links[2].Prefixes6Auto || c.Links[2].Prefixes6 != nil {
		t.Errorf("isp2/isp3: %+v %+v", c.Links[1], c.Links[2])
	}
}

// The hostile configs: each refused in one line naming file, line, field
// and value.
func TestPrefixes6Errors(t *testing.T) {
	const head = "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: [2001:db8:1:100::/56]}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"no gateway6", "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, prefixes6: [2001:db8:1:100::/56]}\n",
			`f.yaml:2: links[0].prefixes6: link "isp1" has no gateway6: a flow from its prefixes could leave by no link of its ISP (give gateway6, an address or auto)`},
		{"given to two links", head + "  - {name: isp2, interface: wan2, gateway6: 2001:db8:2::1, prefixes6: [2001:db8:1:100::/56]}\n",
			`f.yaml:3: links[1].prefixes6[0]: 2001:db8:1:100::/56 overlaps 2001:db8:1:100::/56 of links[0] (isp1): a prefix belongs to the one ISP that routes it to this site`},
		{"inside another link's", head + "  - {name: isp2, interface: wan2, gateway6: 2001:db8:2::1, prefixes6: [2001:db8:1:180::/64]}\n",
			`f.yaml:3: links[1].prefixes6[0]: 2001:db8:1:180::/64 overlaps 2001:db8:1:100::/56 of links[0] (isp1): a prefix belongs to the one ISP that routes it to this site`},
		{"twice in a list", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: [2001:db8:1::/48, 2001:db8:1:100::/56]}\n",
			`f.yaml:2: links[0].prefixes6[1]: 2001:db8:1:100::/56 overlaps 2001:db8:1::/48, also in this list`},
		{"the LAN's ULA", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, nat: true, prefixes6: [fd00::/48]}\n",
			`f.yaml:2: links[0].prefixes6[0]: fd00::/48 is unique-local (fc00::/7), which no ISP routes: a ULA LAN leaves by NAT66 (the link's nat: true)`},
		{"host bits", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: [2001:db8:1:101::/56]}\n",
			`f.yaml:2: links[0].prefixes6[0]: 2001:db8:1:101::/56 has bits set past its length: the prefix is 2001:db8:1:100::/56`},
		{"too long", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: [2001:db8:1:100::1/128]}\n",
			`f.yaml:2: links[0].prefixes6[0]: 2001:db8:1:100::1/128 is not a site's prefix: give one of length /16 to /64`},
		{"ipv4", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: [192.0.2.0/24]}\n",
			`f.yaml:2: links[0].prefixes6[0]: "192.0.2.0/24" is not an IPv6 prefix (like 2001:db8:1:100::/56)`},
		{"a word", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: automatic}\n",
			`f.yaml:2: links[0].prefixes6: "automatic": want auto or a list of IPv6 prefixes ([2001:db8:1:100::/56])`},
		{"empty", "links:\n  - {name: isp1, interface: wan1, gateway6: 2001:db8:1::1, prefixes6: []}\n",
			`f.yaml:2: links[0].prefixes6: an empty list: give the link's prefixes, or auto, or leave the key out`},
		{"auto twice", "links:\n  - {name: isp1, interface: wan1, gateway6: auto, prefixes6: auto}\n  - {name: isp2, interface: wan2, gateway6: auto, prefixes6: auto}\n",
			`f.yaml:3: links[1].prefixes6: auto on link "isp2" too (links[0] has it): the delegated-prefix routes the kernel holds do not say which uplink each came from, so only one link can take them; list the other links' prefixes by hand`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
}
