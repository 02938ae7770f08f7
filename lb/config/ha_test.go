package config

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const haLinks = `ha: true
links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    nat: true
    nat_source: 192.0.2.2
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    nat: true
    nat_source: 198.51.100.2
`

func TestParseHA(t *testing.T) {
	c, err := Parse("f.yaml", []byte(haLinks))
	if err != nil {
		t.Fatal(err)
	}
	if !c.HA || c.Links[0].NATSource != netip.MustParseAddr("192.0.2.2") || c.Links[1].NATSource != netip.MustParseAddr("198.51.100.2") {
		t.Errorf("ha %v, nat sources %v %v", c.HA, c.Links[0].NATSource, c.Links[1].NATSource)
	}
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.2")}, c.NATSources(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("NATSources (-want +got):\n%s", diff)
	}
	// Without ha: a fixed public address, IPv6 too.
	c, err = Parse("f.yaml", []byte(link0("    gateway6: 2001:db8::1\n    nat: true\n    nat_source: 2001:db8::9\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.HA || c.Links[0].NATSource != netip.MustParseAddr("2001:db8::9") {
		t.Errorf("ha %v, nat source %v", c.HA, c.Links[0].NATSource)
	}
}

func TestParseHAErrors(t *testing.T) {
	shared := "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, nat: true, nat_source: 10.0.0.9}\n  - {name: b, interface: x, gateway: 10.0.0.2, nat: true, nat_source: 10.0.0.8}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"not an address", link0("    nat: true\n    nat_source: vip1\n"), `f.yaml:6: links[0].nat_source: "vip1" is not an IP address`},
		{"without nat", link0("    nat_source: 10.0.0.9\n"), `f.yaml:5: links[0].nat_source: 10.0.0.9 needs nat: true on link "a": it is the address flows are NATed to`},
		{"wrong family", link0("    nat: true\n    nat_source: 2001:db8::9\n"), `f.yaml:6: links[0].nat_source: 2001:db8::9 is an IPv6 address, but link "a" carries no IPv6 (no gateway6)`},
		{"unspecified", link0("    nat: true\n    nat_source: 0.0.0.0\n"), `f.yaml:6: links[0].nat_source: 0.0.0.0 cannot be a flow's source address`},
		{"shared interface, two addresses", shared, `f.yaml:3: links[1].nat_source: 10.0.0.8 differs from links[0]'s 10.0.0.9 on the same interface x: flows are NATed by the interface they leave by, so links on one interface need the same nat_source`},
		{"ha with masquerade", "ha: true\n" + link0("    nat: true\n"), `f.yaml:6: links[0].nat: true without an IPv4 nat_source, and ha is true: masquerade would NAT to this node's own address, which the peer does not have, so no flow of link "a" could survive a takeover (give nat_source: the link's VIP)`},
		{"ha without any nat_source", "ha: true\n" + link0(""), `f.yaml:1: ha: true, but no link has a nat_source: a node of the pair knows it is the one routing the flows (and runs hooks and on-demand commands) by holding the VIPs, which are the links' nat_source addresses`},
		{"ha in quotes", "ha: 'true'\n" + link0(""), `f.yaml:1: ha: "true" is in quotes, which make it a string: write it without them`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) || err.Error() != tc.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
}

// Two nodes of a pair with the same config get the same marks and tables,
// whatever each applied before: with ha, the history is not read.
func TestResolveHAFromConfigAlone(t *testing.T) {
	c, err := Parse("f.yaml", []byte(haLinks))
	if err != nil {
		t.Fatal(err)
	}
	nodeA := &fakeApplied{links: map[string]Applied{"isp1": {0x300, 105}, "old": {0x100, 101}}}
	nodeB := &fakeApplied{links: map[string]Applied{"isp2": {0x100, 101}}}
	layout := func(r AppliedReader) []string {
		rc, err := Resolve(c, r)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range rc.Links {
			out = append(out, fmt.Sprintf("%s %#x %d", l.Name, l.Mark, l.Table))
		}
		return out
	}
	want := []string{"isp1 0x100 101", "isp2 0x200 102"}
	for name, r := range map[string]*fakeApplied{"A": nodeA, "B": nodeB, "fresh": {}} {
		if diff := cmp.Diff(want, layout(r)); diff != "" {
			t.Errorf("node %s (-want +got):\n%s", name, diff)
		}
		if r.reads != 0 {
			t.Errorf("node %s: what was applied was read %d times", name, r.reads)
		}
	}
	// Without ha, history wins (the old behaviour, for contrast).
	c.HA = false
	if got := layout(nodeA); got[0] != "isp1 0x300 105" {
		t.Errorf("without ha: %v", got)
	}
}
