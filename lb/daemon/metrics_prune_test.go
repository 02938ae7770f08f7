package daemon

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config/configtest"
)

// A reload's config drops a link's IPv6, a whole link and a policy: their
// series go, the rest keep their values.
func TestMetricsPrune(t *testing.T) {
	m := NewMetrics()
	for _, s := range [][2]string{{"isp1", "ipv4"}, {"isp1", "ipv6"}, {"isp2", "ipv4"}, {"lte", "ipv4"}} {
		m.changed(s[0], s[1])
		m.suspected(s[0], s[1])
	}
	m.tierChanged("default", "ipv4", 0)
	m.tierChanged("default", "ipv6", 0)
	m.tierChanged("backup", "ipv4", 1)
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, gateway6: 2001:db8:2::1}
`)
	m.prune(c)
	if n := testutil.CollectAndCount(m.changes); n != 2 {
		t.Errorf("state changes: %d series, want 2 (isp1 and isp2, IPv4)", n)
	}
	if n := testutil.CollectAndCount(m.suspects); n != 2 {
		t.Errorf("suspicions: %d series, want 2", n)
	}
	if v := testutil.ToFloat64(m.changes.WithLabelValues("isp1", "ipv4")); v != 1 {
		t.Errorf("isp1 IPv4 changes: %v, want 1 (kept)", v)
	}
	// default keeps IPv6 (isp2 has it); backup is gone.
	if n := testutil.CollectAndCount(m.tierChanges); n != 2 {
		t.Errorf("tier changes: %d series, want 2 (default, both families)", n)
	}
}
