package plan

import (
	"net/netip"
	"strings"
	"testing"

	"flowpin/lb/config"
)

// An IPv6 VIP that is on its interface but tentative (in duplicate
// address detection) or failed detection (another host has it) is not
// held: the node cannot send from it, and believing itself primary on it
// would make two primaries. A failed one is warned of; a tentative one
// is not (it is one within a second).
func TestVIPsTentativeOrDADFailed(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(`ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - {name: isp2, interface: wan2, gateway6: "2001:db8:2::1", nat: true, nat_source: "2001:db8:2::2"}
`))
	if err != nil {
		t.Fatal(err)
	}
	vip6 := netip.MustParseAddr("2001:db8:2::2")
	for _, tc := range []struct {
		name      string
		tentative bool
		failed    bool
		role      Role
		warn      bool
	}{
		{name: "held", role: RolePrimary},
		{name: "tentative", tentative: true, role: RoleSplit},
		{name: "failed DAD", failed: true, role: RoleSplit, warn: true},
	} {
		w2 := iface("wan2", true, "2001:db8:2::3/64", "2001:db8:2::2/64")
		if tc.tentative {
			w2.Tentative = append(w2.Tentative, vip6)
		}
		if tc.failed {
			w2.DADFailed = append(w2.DADFailed, vip6)
		}
		d, err := Plan(c, ifaces(iface("wan1", true, "192.0.2.3/24", "192.0.2.2/24"), w2))
		if err != nil {
			t.Fatal(err)
		}
		if r := RoleOf(d.VIPs); r != tc.role {
			t.Errorf("%s: role %q, want %q (%+v)", tc.name, r, tc.role, d.VIPs)
		}
		warned := false
		for _, w := range d.Warnings {
			if strings.Contains(w, "nat_source 2001:db8:2::2 on wan2 failed duplicate address detection") {
				warned = true
			}
		}
		if warned != tc.warn {
			t.Errorf("%s: warned %v, want %v: %q", tc.name, warned, tc.warn, d.Warnings)
		}
	}
}
