package plan

import (
	"strings"
	"testing"

	"flowpin/lb/config"
)

// With ha, a dual-stack link with nat: true has an IPv4 nat_source (the
// config demands one) and no IPv6 one (a link has one nat_source): its
// IPv6 flows are masqueraded to this node's own address and cannot go on
// on the peer. The plan says so, once per link.
func TestPlanHAMasqueradedIPv6Warns(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(`ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: 2001:db8:a::1, nat: true, nat_source: 192.0.2.2}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, nat_source: 198.51.100.2}
`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Plan(c, ifaces(iface("wan1", true, "192.0.2.3/24", "2001:db8:a::3/64"), iface("wan2", true, "198.51.100.3/24")))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range d.Warnings {
		if strings.Contains(w, "IPv6") && strings.Contains(w, "masquerade") {
			got = append(got, w)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "isp1") {
		t.Errorf("warnings %q", d.Warnings)
	}
}

// A link that has prefixes6 routes IPv6 without NAT66 already: no warning.
func TestPlanHAPrefixes6NoMasqueradeWarning(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(`ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: 2001:db8:a::1, nat: true, nat_source: 192.0.2.2, prefixes6: [2001:db8:1100::/56]}
`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Plan(c, ifaces(iface("wan1", true, "192.0.2.3/24", "2001:db8:a::3/64"), iface("lan", true, "2001:db8:1100::1/64")))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range d.Warnings {
		if strings.Contains(w, "masquerade") {
			t.Errorf("warning %q", w)
		}
	}
}
