package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const dnsLinks = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    gateway6: 2001:db8:1::1
    dns: [192.0.2.53, 2001:db8:1::53, 9.9.9.9]
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    dns: auto
`

// dnsRouteList renders the balance table's host routes.
func dnsRouteList(d *Desired) []string {
	var out []string
	for _, r := range d.Routing.Routes {
		if r.Table == 100 && (r.Dst.Bits() == 32 || r.Dst.Bits() == 128) {
			out = append(out, r.Dst.String()+" via "+r.Gw.String()+" dev "+r.Dev)
		}
	}
	slices.Sort(out)
	return out
}

// Each server of one link is routed by that link while its family is in
// route; a server of two links is left to the balancing.
func TestDNSRoutes(t *testing.T) {
	c := mustParse(t, dnsLinks)
	ifs := ifaces(iface("wan1", true, "192.0.2.10/24", "2001:db8:1::10/64"), iface("wan2", true, "198.51.100.10/24"))
	auto := map[string][]netip.Addr{"isp2": {netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("9.9.9.9")}}
	for _, tc := range []struct {
		name        string
		down, down6 map[string]string
		want        []string
	}{
		{"all up", nil, nil, []string{"192.0.2.53/32 via 192.0.2.1 dev wan1", "198.51.100.53/32 via 198.51.100.1 dev wan2", "2001:db8:1::53/128 via 2001:db8:1::1 dev wan1"}},
		{"isp1 IPv4 down", map[string]string{"isp1": "x"}, nil, []string{"198.51.100.53/32 via 198.51.100.1 dev wan2", "2001:db8:1::53/128 via 2001:db8:1::1 dev wan1"}},
		{"isp1 IPv6 down", nil, map[string]string{"isp1": "x"}, []string{"192.0.2.53/32 via 192.0.2.1 dev wan1", "198.51.100.53/32 via 198.51.100.1 dev wan2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := With(c, ifs, Options{Down: tc.down, Down6: tc.down6, DNS: auto})
			if err != nil {
				t.Fatal(err)
			}
			if got := dnsRouteList(d); !slices.Equal(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
		})
	}
	// Without the lease, isp2 has no server, and 9.9.9.9 is isp1's alone.
	d, err := With(c, ifs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dnsRouteList(d); !slices.Contains(got, "9.9.9.9/32 via 192.0.2.1 dev wan1") {
		t.Errorf("got %v", got)
	}
	// The routes are rules.Routes in flowpin's own balance table: down
	// removes them with the table, and the script shows them.
	if s := strings.Join(FullScript(d), "\n"); !strings.Contains(s, "9.9.9.9") {
		t.Errorf("script without the server's route:\n%s", s)
	}
}

// arp needs a link-layer neighbour: refused on a point-to-point link,
// with the field and the interface.
func TestARPOnPointToPoint(t *testing.T) {
	c := mustParse(t, "links:\n  - name: lte\n    interface: ppp0\n    gateway: auto\n    check: {method: arp}\n")
	_, err := Plan(c, ifaces(p2p("ppp0", "100.64.0.2 100.64.0.1/32")))
	want := "f.yaml:5: links[0].check.method: arp: ppp0 is point-to-point, with no link-layer neighbour to ask for the gateway; probe it with icmp (or exec)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}
