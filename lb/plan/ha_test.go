package plan

import (
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/rules"
)

const haConfig = `ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, nat_source: 198.51.100.2}
`

// The routes of a node of an HA pair are the same whether it holds the
// VIPs or not, and never name a VIP: the kernel refuses a route whose src
// the node does not have, and the backup has none. Its role follows the
// VIPs.
func TestPlanHA(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haConfig))
	if err != nil {
		t.Fatal(err)
	}
	// The VIP first, as an address keepalived added could be listed.
	primary := ifaces(iface("wan1", true, "192.0.2.2/24", "192.0.2.3/24"), iface("wan2", true, "198.51.100.3/24", "198.51.100.2/24"), iface("lan", true, "10.9.0.1/24"))
	backup := ifaces(iface("wan1", true, "192.0.2.3/24"), iface("wan2", true, "198.51.100.3/24"), iface("lan", true, "10.9.0.2/24"))
	split := ifaces(iface("wan1", true, "192.0.2.3/24", "192.0.2.2/24"), iface("wan2", true, "198.51.100.3/24"))
	dp, err := Plan(c, primary)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Plan(c, backup)
	if err != nil {
		t.Fatal(err)
	}
	script := func(d *Desired) string { return strings.Join(FullScript(d), "\n") }
	if script(dp) != script(db) {
		t.Errorf("the plan depends on holding the VIPs:\nprimary:\n%s\nbackup:\n%s", script(dp), script(db))
	}
	for _, vip := range []string{"192.0.2.2", "198.51.100.2"} {
		if s := script(dp); strings.Contains(s, "src "+vip) || strings.Contains(s, "from "+vip) {
			t.Errorf("a route or rule names VIP %s:\n%s", vip, s)
		}
	}
	if !dp.NFT.Guard || !dp.HA {
		t.Errorf("guard %v, ha %v", dp.NFT.Guard, dp.HA)
	}
	ds, err := Plan(c, split)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d    *Desired
		want Role
	}{{dp, RolePrimary}, {db, RoleBackup}, {ds, RoleSplit}} {
		if got := RoleOf(tc.d.VIPs); got != tc.want {
			t.Errorf("role %q, want %q (%+v)", got, tc.want, tc.d.VIPs)
		}
	}
	if dp.VIPs[0].Iface != "wan1" || ds.VIPs[1].Iface != "" {
		t.Errorf("VIPs %+v, %+v", dp.VIPs, ds.VIPs)
	}

	// A node with only the VIP on a link has no address of its own there:
	// the link is unusable, said why, rather than routed from the VIP.
	only := ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.3/24"))
	d, err := Plan(c, only)
	if err != nil {
		t.Fatal(err)
	}
	if d.Links[0].Usable || !strings.Contains(d.Links[0].Why, "no IPv4 address of its own") {
		t.Errorf("link isp1: usable %v, %q", d.Links[0].Usable, d.Links[0].Why)
	}

	// Without ha, a nat_source on the interface is an address like any
	// other, and there is no guard.
	c.HA = false
	d, err = Plan(c, map[string]rules.Iface{"wan1": iface("wan1", true, "192.0.2.2/24"), "wan2": iface("wan2", true, "198.51.100.2/24")})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Links[0].Usable || d.NFT.Guard {
		t.Errorf("without ha: usable %v, guard %v", d.Links[0].Usable, d.NFT.Guard)
	}
}
