package integration

import (
	"strings"
	"testing"
)

// checkDemoDNS checks the demo's DNS section (scripts/demo_dns.sh): arp
// refused on the point-to-point link, the servers' routes, and the resolv
// file losing isp1's server when the ARP probe takes isp1 down and getting
// it back.
func checkDemoDNS(t *testing.T, text string) {
	t.Helper()
	i := strings.Index(text, "==> DNS that follows the links")
	if i < 0 {
		t.Error("no DNS section in the demo")
		return
	}
	sec := text[i+4:]
	if j := strings.Index(sec, "==> "); j >= 0 {
		sec = sec[:j]
	}
	order := []string{
		"links[1].check.method: arp: wan2 is point-to-point",
		"resolv.conf lists: 203.0.113.53 203.0.113.54",
		"203.0.113.53 via 192.0.2.1 dev wan1",
		"203.0.113.54 dev wan2",
		"(isp1: down, ",
		"resolv.conf lists: 203.0.113.54\n",
		"(isp1: up, ",
		"resolv.conf lists: 203.0.113.53 203.0.113.54",
	}
	rest := sec
	for _, w := range order {
		k := strings.Index(rest, w)
		if k < 0 {
			t.Errorf("demo DNS section: no %q (in order)\n%s", w, sec)
			return
		}
		rest = rest[k+len(w):]
	}
}
