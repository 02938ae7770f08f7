package daemon

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
)

// Health and the metrics say which of each link's DNS servers the resolv
// file lists: both while both links are up, isp1's left out while isp1 is
// down, and back with it.
func TestDNSServersInHealthAndMetrics(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, checkedDNS)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	dnsOf := func() string {
		var out []string
		for _, lh := range h.d.Health() {
			for _, s := range lh.DNS {
				out = append(out, fmt.Sprintf("%s %s %v", lh.Name, s.Address, s.InResolv))
			}
		}
		return strings.Join(out, ", ")
	}
	metric := func(in1, in2 int) string {
		return fmt.Sprintf(`# HELP flowpin_link_dns_in_resolv 1 while the resolv file the daemon writes lists this DNS server of the link (links[].dns, or its lease's with dns: auto), 0 while it leaves it out (the link's family is down).
# TYPE flowpin_link_dns_in_resolv gauge
flowpin_link_dns_in_resolv{link="isp1",server="192.0.2.53"} %d
flowpin_link_dns_in_resolv{link="isp2",server="198.51.100.53"} %d
`, in1, in2)
	}
	check := func(in1, in2 int) {
		t.Helper()
		if err := testutil.GatherAndCompare(h.d.Metrics().Registry, strings.NewReader(metric(in1, in2)), "flowpin_link_dns_in_resolv"); err != nil {
			t.Error(err)
		}
	}
	h.eventually("both servers listed", func() bool { return dnsOf() == "isp1 192.0.2.53 true, isp2 198.51.100.53 true" })
	check(1, 1)
	h.probers.set("wan1", false)
	for range 3 {
		h.round()
	}
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.eventually("isp1's server left out", func() bool { return dnsOf() == "isp1 192.0.2.53 false, isp2 198.51.100.53 true" })
	check(0, 1)
	h.probers.set("wan1", true)
	for range 2 {
		h.round()
	}
	h.waitState("isp1", health.StateUp)
	h.advanceSync()
	h.eventually("isp1's server back", func() bool { return dnsOf() == "isp1 192.0.2.53 true, isp2 198.51.100.53 true" })
	check(1, 1)
}
