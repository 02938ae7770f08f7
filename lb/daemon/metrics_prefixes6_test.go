package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/rules"
)

// The gauge follows the plan: 0 while the prefix leaves by its link, 1
// while isp1 is down and it is translated; a prefix gone from the plan
// loses its series.
func TestMetricsPrefixes6(t *testing.T) {
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: auto}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', prefixes6: [2001:db8:2:100::/56]}
`)
	lo := rules.Iface{Name: "lo", Up: true, Delegated: []netip.Prefix{netip.MustParsePrefix("2001:db8:1:100::/56")}}
	ifs := map[string]rules.Iface{
		"lo":   lo,
		"wan1": {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::2/64")}},
		"wan2": {Name: "wan2", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:2::2/64")}},
	}
	m := NewMetrics()
	step := func(down map[string]string, want string) {
		t.Helper()
		d, err := plan.With(c, ifs, plan.Options{Down6: down})
		if err != nil {
			t.Fatal(err)
		}
		m.setPrefixes6(d)
		const head = "# HELP flowpin_prefix6_translated 1 while new flows from the link's IPv6 prefix (prefixes6) leave by other links, translated 1:1 onto their prefixes, because the link is down; 0 while they leave by the link itself.\n# TYPE flowpin_prefix6_translated gauge\n"
		if err := testutil.CollectAndCompare(m.prefix6, strings.NewReader(head+want)); err != nil {
			t.Error(err)
		}
	}
	step(nil, "flowpin_prefix6_translated{link=\"isp1\",prefix=\"2001:db8:1:100::/56\"} 0\nflowpin_prefix6_translated{link=\"isp2\",prefix=\"2001:db8:2:100::/56\"} 0\n")
	step(map[string]string{"isp1": "down"}, "flowpin_prefix6_translated{link=\"isp1\",prefix=\"2001:db8:1:100::/56\"} 1\nflowpin_prefix6_translated{link=\"isp2\",prefix=\"2001:db8:2:100::/56\"} 0\n")
	// The delegation ends: isp1's prefix leaves the plan and the metric.
	ifs["lo"] = rules.Iface{Name: "lo", Up: true}
	step(nil, "flowpin_prefix6_translated{link=\"isp2\",prefix=\"2001:db8:2:100::/56\"} 0\n")
}
