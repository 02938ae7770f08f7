package rules

import (
	"net/netip"
	"slices"
	"testing"
)

// A DHCPv6-PD client's routes, as dhcpcd installs them: the unreachable
// route of the delegation on lo with protocol dhcp counts; the same shape
// with another protocol, and the delegated /64 a LAN was given, do not.
func TestInterfacesDelegated(t *testing.T) {
	ns := testNS(t)
	ipn(t, ns, "link", "add", "lan", "type", "veth", "peer", "name", "lan1")
	ipn(t, ns, "link", "set", "lan", "up")
	ipn(t, ns, "-6", "route", "add", "unreachable", "2001:db8:1:100::/56", "dev", "lo", "proto", "dhcp", "metric", "1001")
	ipn(t, ns, "-6", "route", "add", "unreachable", "2001:db8:9::/48", "dev", "lo", "proto", "static")
	ipn(t, ns, "-6", "route", "add", "2001:db8:1:101::/64", "dev", "lan", "proto", "dhcp")
	ifs, err := openAt(t, ns).Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var all []netip.Prefix
	for _, i := range ifs {
		all = append(all, i.Delegated...)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("2001:db8:1:100::/56")}; !slices.Equal(all, want) || !slices.Equal(ifs["lo"].Delegated, want) {
		t.Errorf("delegated: %v (lo: %v), want %v on lo", all, ifs["lo"].Delegated, want)
	}
}
