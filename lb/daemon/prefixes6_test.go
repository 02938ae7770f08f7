package daemon

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/rules"
)

// The daemon says when a prefix starts and stops being translated, and
// when a delegation comes and goes; nothing when nothing changed.
func TestPrefixChanges(t *testing.T) {
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', prefixes6: auto}
`)
	ifs := map[string]rules.Iface{
		"lo":   {Name: "lo", Up: true, Delegated: []netip.Prefix{netip.MustParsePrefix("2001:db8:2:100::/56")}},
		"wan1": {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::2/64")}},
		"wan2": {Name: "wan2", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:2::2/64")}},
	}
	planned := func(down map[string]string) *plan.Desired {
		t.Helper()
		d, err := plan.With(c, ifs, plan.Options{Down6: down})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	up, down := planned(nil), planned(map[string]string{"isp1": "down"})
	for _, tc := range []struct {
		name     string
		old, cur *plan.Desired
		want     []string
	}{
		{"start", nil, up, nil},
		{"steady", up, up, nil},
		{"isp1 down", up, down, []string{"prefix 2001:db8:1:100::/56 of link isp1: its link is down, new flows are translated to 2001:db8:2:100::/56 on isp2"}},
		{"isp1 back", down, up, []string{"prefix 2001:db8:1:100::/56 of link isp1: its link is back, new flows leave by it untranslated (flows translated meanwhile stay where they are)"}},
	} {
		if diff := cmp.Diff(tc.want, prefixChanges(tc.old, tc.cur)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	ifs["lo"] = rules.Iface{Name: "lo", Up: true}
	gone := planned(nil)
	if diff := cmp.Diff([]string{"prefix 2001:db8:2:100::/56 of link isp2 is gone"}, prefixChanges(up, gone)); diff != "" {
		t.Errorf("delegation ended (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"prefix 2001:db8:2:100::/56 of link isp2 appeared"}, prefixChanges(gone, up)); diff != "" {
		t.Errorf("delegated again (-want +got):\n%s", diff)
	}
}
