package plan

import (
	"strings"
	"testing"

	"flowpin/lb/config"
)

// A VIP keepalived holds on another interface than its link's (a
// virtual_ipaddress without the right dev) counts as held, but the ISP's
// router looks for it on the link: the plan warns, naming both.
func TestPlanHAVIPOnOtherInterface(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haConfig))
	if err != nil {
		t.Fatal(err)
	}
	wrong := ifaces(iface("wan1", true, "192.0.2.3/24"), iface("wan2", true, "198.51.100.3/24", "198.51.100.2/32"), iface("lan", true, "10.9.0.1/24", "192.0.2.2/32"))
	d, err := Plan(c, wrong)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range d.Warnings {
		if strings.Contains(w, "192.0.2.2") {
			got = append(got, w)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "on lan") || !strings.Contains(got[0], "wan1") {
		t.Errorf("warnings %q", d.Warnings)
	}
	// Held where it belongs (a /32 as well as the subnet's length): no warning.
	right := ifaces(iface("wan1", true, "192.0.2.3/24", "192.0.2.2/32"), iface("wan2", true, "198.51.100.3/24", "198.51.100.2/24"))
	if d, err = Plan(c, right); err != nil {
		t.Fatal(err)
	}
	for _, w := range d.Warnings {
		if strings.Contains(w, "nat_source") {
			t.Errorf("VIPs where they belong: %q", w)
		}
	}
	if RoleOf(d.VIPs) != RolePrimary {
		t.Errorf("role %q", RoleOf(d.VIPs))
	}
}
