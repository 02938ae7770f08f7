package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// origSources counts ns's TCP conntrack entries to port by their original
// source address.
func origSources(t *testing.T, ns string, port int) map[string]int {
	t.Helper()
	// Without the summary conntrack writes to stderr, which can land
	// in the middle of a line of the listing.
	out := run(t, ns, "sh", "-c", "conntrack -L -p tcp --dport "+strconv.Itoa(port)+" 2>/dev/null")
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "src=") {
				got[strings.TrimPrefix(f, "src=")]++
				break // the first is the original direction's
			}
		}
	}
	return got
}

// NAT by link on a shared interface: modem1's flows are masqueraded to
// the router's wan0 address, modem2's (which routes the LAN, as a modem in
// bridge-like mode or an ISP router with a routed prefix would) leave with
// the LAN host's own address. Every connection succeeds over both.
func TestTwoModemsMixedNAT(t *testing.T) {
	d := newTwoModems(t)
	addRoute(t, d.ISP2, "10.77.0.0/24", "via", "192.168.1.2")
	cfg := d.configModems(1, 1, "")
	i := strings.LastIndex(cfg, "nat: true") // modem2's
	cfg = cfg[:i] + "nat: false" + cfg[i+len("nat: true"):]
	apply(t, d.Router, cfg)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	r := connectN(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, srv.Port()), srv, 60, dialOpts{})
	a, b := onLinks(d, r.PerSource)
	if r.Failed != 0 || a == 0 || b == 0 {
		t.Fatalf("%d/%d connections by modem1/modem2, %d failed (first: %v); want both, none failed", a, b, r.Failed, r.Errors)
	}
	m1, m2 := origSources(t, d.ISP1, srv.Port()), origSources(t, d.ISP2, srv.Port())
	t.Logf("modem1 saw sources %v (%d connections), modem2 %v (%d)", m1, a, m2, b)
	if m1["192.168.1.2"] != a || len(m1) != 1 {
		t.Errorf("modem1 (nat: true) saw sources %v, want all %d from the router's 192.168.1.2", m1, a)
	}
	if m2[d.LANHost] != b || len(m2) != 1 {
		t.Errorf("modem2 (nat: false) saw sources %v, want all %d from the LAN host %s", m2, b, d.LANHost)
	}
}
