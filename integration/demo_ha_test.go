package integration

import (
	"regexp"
	"strconv"
	"testing"
	"time"
)

// checkHADemo checks the demo's HA pair section (scripts/demo_ha.sh):
// the roles before, a takeover in under 2 s, and every flow kept with its
// NAT source address and port. expect is TestDemo's: the section under a
// heading, which must contain each of want.
func checkHADemo(t *testing.T, expect func(heading string, want ...string) string) {
	t.Helper()
	sec := expect("HA pair", "ha: primary: holds the VIPs (192.0.2.2 on wan1, 198.51.100.2 on wan2)",
		"ha: backup: holds none of the VIPs", "flows kept: 10 of 10", "10 of 10 with the same NAT source address and port at far")
	m := regexp.MustCompile(`takeover: fw-b holds the VIPs (\d+) ms after fw-a died`).FindStringSubmatch(sec)
	if m == nil {
		t.Errorf("HA pair: no takeover line")
		return
	}
	ms, _ := strconv.Atoi(m[1])
	t.Logf("demo: HA takeover in %v", time.Duration(ms)*time.Millisecond)
	if ms >= 2000 {
		t.Errorf("HA pair: takeover took %d ms, want under 2 s", ms)
	}
}
