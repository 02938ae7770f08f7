package status

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/rules"
)

type fakeIfaces map[string]rules.Iface

func (f fakeIfaces) Interfaces() (map[string]rules.Iface, error) { return f, nil }

// The role is read from the node's addresses each time: what status shows
// on the backup is what the backup has.
func TestStatusHARole(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(`ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, nat_source: 198.51.100.2}
`))
	if err != nil {
		t.Fatal(err)
	}
	addrs := func(list ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, a := range list {
			out = append(out, netip.MustParsePrefix(a))
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		ifaces fakeIfaces
		role   plan.Role
		line   string
	}{
		{"primary", fakeIfaces{"wan1": {Addrs: addrs("192.0.2.3/24", "192.0.2.2/24")}, "wan2": {Addrs: addrs("198.51.100.2/24")}}, plan.RolePrimary,
			"ha: primary: holds the VIPs (192.0.2.2 on wan1, 198.51.100.2 on wan2)\n"},
		{"backup", fakeIfaces{"wan1": {Addrs: addrs("192.0.2.3/24")}, "wan2": {Addrs: addrs("198.51.100.3/24")}}, plan.RoleBackup,
			"ha: backup: holds none of the VIPs (192.0.2.2, 198.51.100.2); the peer routes the pair's flows, and hooks and on-demand commands wait here\n"},
		{"split", fakeIfaces{"wan1": {Addrs: addrs("192.0.2.2/24")}}, plan.RoleSplit,
			"ha: split: holds 192.0.2.2 on wan1 but not 198.51.100.2 (a takeover under way, or the pair disagrees)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Status{}
			if err := AddHA(s, c, tc.ifaces); err != nil {
				t.Fatal(err)
			}
			if s.HA == nil || s.HA.Role != tc.role {
				t.Fatalf("ha %+v, want role %s", s.HA, tc.role)
			}
			var b bytes.Buffer
			writeHA(&b, s.HA)
			if b.String() != tc.line {
				t.Errorf("\n got %q\nwant %q", b.String(), tc.line)
			}
		})
	}
	// Without ha: no role, a warning only for an address that is nowhere.
	c.HA = false
	s := &Status{}
	if err := AddHA(s, c, fakeIfaces{"wan1": {Addrs: addrs("192.0.2.2/24")}}); err != nil {
		t.Fatal(err)
	}
	if s.HA.Role != "" || len(s.Warnings) != 1 || !strings.HasPrefix(s.Warnings[0], "nat_source 198.51.100.2 is on no interface") {
		t.Errorf("without ha: %+v, warnings %q", s.HA, s.Warnings)
	}
}
