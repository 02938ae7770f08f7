package status

import (
	"net/netip"
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/rules"
)

// status warns of a VIP held on another interface than its link's.
func TestStatusHAVIPOnOtherInterface(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte("ha: true\nlinks:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Status{}
	ifs := fakeIfaces{"wan1": {Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.3/24")}}, "lan": rules.Iface{Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/32")}}}
	if err := AddHA(s, c, ifs); err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "192.0.2.2 is on lan, not on wan1") {
		t.Errorf("warnings %q", s.Warnings)
	}
}
