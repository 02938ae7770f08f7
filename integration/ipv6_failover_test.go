package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// checkedConfig6 is config6 with fast checks of each family against the far
// host: the IPv4 target probes IPv4, the IPv6 one IPv6.
func checkedConfig6(d *dualWAN) string {
	return fmt.Sprintf(`links:
  - name: isp1
    interface: wan1
    gateway: %s
    gateway6: auto
    weight: 1
    nat: true
    check: {targets: [%s, %s], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
  - name: isp2
    interface: wan2
    gateway: %s
    gateway6: %s
    weight: 1
    nat: true
    check: {targets: [%s, %s], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
`, d.GW1, d.Service, d.Service6, d.GW2, d.GW2v6, d.Service, d.Service6)
}

// familyStates is each link's IPv4 and IPv6 state from `status --json`.
func (dm *daemon) familyStates(t testing.TB) map[string][2]string {
	t.Helper()
	out, err := flowpin(t, dm.ns, "status", "--json", "-c", dm.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s struct {
		Links []struct {
			Name   string `json:"name"`
			State  string `json:"state"`
			State6 string `json:"state6"`
		} `json:"links"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	m := map[string][2]string{}
	for _, l := range s.Links {
		m[l.Name] = [2]string{l.State, l.State6}
	}
	return m
}

// isp1's IPv6 dies silently (its upstream drops IPv6; the link, neighbour
// discovery and IPv4 keep working): new IPv6 flows move to isp2 within the
// detection time, new IPv4 flows still use both links.
func TestDualStackPerFamilyFailover(t *testing.T) {
	d := newDualWAN6(t)
	srv6 := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	srv4 := startEchoServer(t, d.Far, hostPort(d.Service, 0))
	target6, target4 := hostPort(d.Service6, srv6.Port()), hostPort(d.Service, srv4.Port())
	dm := startDaemon(t, d.Router, checkedConfig6(d))

	deadline := time.Now().Add(5 * time.Second)
	for st := dm.familyStates(t); st["isp1"] != [2]string{"up", "up"} || st["isp2"] != [2]string{"up", "up"}; st = dm.familyStates(t) {
		if time.Now().After(deadline) {
			t.Fatalf("links not up in both families: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := connectN(t, d.LAN, target6, srv6, 40, dialOpts{}); r.Failed != 0 || len(r.PerSource) != 2 {
		t.Fatalf("before the outage: %d of 40 IPv6 flows failed, far saw %v", r.Failed, r.PerSource)
	}

	// Forwarded IPv6 dies at ISP1 in both directions; what ISP1 itself
	// answers (neighbour discovery, its own addresses) still works.
	nft(t, d.ISP1, `table inet outage6 {
	chain forward6 {
		type filter hook forward priority -500; policy accept;
		meta nfproto ipv6 drop
	}
}
`)
	start := time.Now()
	// fall 3 x interval 300ms, and a round's timeout: about 1.2s.
	const limit = 4 * time.Second
	var took time.Duration
	for {
		srv6.Reset()
		r := connectN(t, d.LAN, target6, srv6, 16, dialOpts{Timeout: 250 * time.Millisecond, Parallel: 16})
		if r.Failed == 0 {
			took = time.Since(start)
			break
		}
		if time.Since(start) > limit {
			t.Fatalf("new IPv6 flows still failing %v after isp1's IPv6 died (%d of 16); states %v", limit, r.Failed, dm.familyStates(t))
		}
	}
	t.Logf("isp1's IPv6 died: new IPv6 flows all succeed again after %v", took.Round(time.Millisecond))

	if st := dm.familyStates(t)["isp1"]; st != [2]string{"up", "down"} {
		t.Errorf("isp1 is IPv4 %q, IPv6 %q; want up, down", st[0], st[1])
	}
	srv6.Reset()
	r6 := connectN(t, d.LAN, target6, srv6, 60, dialOpts{})
	if r6.Failed != 0 || r6.PerSource[netip.MustParseAddr(d.WAN2v6)] != 60 {
		t.Errorf("after isp1's IPv6 died: %d of 60 IPv6 flows failed, far saw %v; want all via isp2", r6.Failed, r6.PerSource)
	}
	r4 := connectN(t, d.LAN, target4, srv4, 120, dialOpts{})
	if r4.Failed != 0 {
		t.Errorf("%d of 120 IPv4 flows failed after isp1's IPv6 died: %v", r4.Failed, r4.Errors[0])
	}
	// n=120 at 1:1: the share's standard deviation is 0.046.
	checkSplitOf(t, "IPv4 beside the IPv6 outage", r4.PerSource, d.WAN1, d.WAN2, 1, 1, 0.14)
}
