package integration

import (
	"fmt"
	"net/netip"
	"strings"
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
	m := map[string][2]string{}
	for _, l := range dm.statusLinks(t) {
		m[l.Name] = [2]string{l.State, l.State6}
	}
	return m
}

// waitFamilies waits up to 5 s for a link's IPv4 and IPv6 states.
func (dm *daemon) waitFamilies(t testing.TB, link string, want [2]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for st := dm.familyStates(t); st[link] != want; st = dm.familyStates(t) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is IPv4 %q, IPv6 %q after 5 s; want %q, %q", link, st[link][0], st[link][1], want[0], want[1])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// outage drops what ISP1 forwards of one family ("ipv4" or "ipv6"), both
// ways; what ISP1 itself answers (neighbour discovery, its own addresses)
// still works. It returns the repair.
func outage(t testing.TB, isp, family string) func() {
	t.Helper()
	nft(t, isp, fmt.Sprintf(`table inet outage_%[1]s {
	chain forward {
		type filter hook forward priority -500; policy accept;
		meta nfproto %[1]s drop
	}
}
`, family))
	return func() { run(t, isp, "nft", "delete", "table", "inet", "outage_"+family) }
}

// heldBroken stops held flows and counts those that broke, checking that
// every one had been opened by the far end's view of want.
func heldBroken(t testing.TB, what string, l *longLived, want string) int {
	t.Helper()
	broken := 0
	for _, s := range l.stop() {
		if s.Remote.Addr() != netip.MustParseAddr(want) {
			t.Errorf("%s: a held flow went by %v, want %s", what, s.Remote.Addr(), want)
		}
		if s.Stalled || s.Err != nil {
			broken++
		}
	}
	return broken
}

// failback: flush follows each family's own tier. With isp1 down in both
// families the policy's held IPv4 and IPv6 flows run on isp2. isp1's IPv6
// returns first: the held IPv6 flows are deleted (so they re-establish on
// isp1) while the held IPv4 flows, whose tier has not moved, stay. When
// IPv4 returns, its held flows go too.
func TestDualStackFailbackPerFamily(t *testing.T) {
	d := newDualWAN6(t)
	srv6 := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	srv4 := startEchoServer(t, d.Far, hostPort(d.Service, 0))
	target6, target4 := hostPort(d.Service6, srv6.Port()), hostPort(d.Service, srv4.Port())
	dm := startDaemon(t, d.Router, checkedConfig6(d)+`policies:
  - {name: isp1-first, tiers: [[isp1], [isp2]], failback: flush}
default_policy: isp1-first
`)
	dm.waitFamilies(t, "isp1", [2]string{"up", "up"})
	dm.waitFamilies(t, "isp2", [2]string{"up", "up"})
	if r := connectN(t, d.LAN, target6, srv6, 20, dialOpts{}); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1v6)] != 20 {
		t.Fatalf("both links up: %d of 20 IPv6 flows failed, far saw %v; want all via isp1 (tier 1)", r.Failed, r.PerSource)
	}

	repair6, repair4 := outage(t, d.ISP1, "ipv6"), outage(t, d.ISP1, "ipv4")
	dm.waitFamilies(t, "isp1", [2]string{"down", "down"})
	held6 := startLongLived(t, d.LAN, target6, srv6, 8, dialOpts{})
	held4 := startLongLived(t, d.LAN, target4, srv4, 8, dialOpts{})
	time.Sleep(300 * time.Millisecond)

	// The held flows break at the flush, which the sync after status
	// says up does: the wait for their stall counts from there.
	const flushed = "failback: flushed the policy's flows on a lower tier"
	n := strings.Count(dm.logs(), flushed)
	repair6()
	dm.waitFamilies(t, "isp1", [2]string{"down", "up"})
	dm.waitLogged(t, flushed, n, 5*time.Second)
	time.Sleep(stallAfter + 500*time.Millisecond)
	b6, b4 := heldBroken(t, "IPv6", held6, d.WAN2v6), heldBroken(t, "IPv4", held4, d.WAN2)
	t.Logf("isp1's IPv6 back: held IPv6 flows on isp2 broken %d of 8, held IPv4 flows %d of 8", b6, b4)
	if b6 != 8 || b4 != 0 {
		t.Errorf("IPv6 failback: %d of 8 IPv6 and %d of 8 IPv4 held flows broke; want 8 and 0", b6, b4)
	}
	srv6.Reset()
	if r := connectN(t, d.LAN, target6, srv6, 20, dialOpts{}); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1v6)] != 20 {
		t.Errorf("isp1's IPv6 back: %d of 20 IPv6 flows failed, far saw %v; want all via isp1", r.Failed, r.PerSource)
	}

	held4 = startLongLived(t, d.LAN, target4, srv4, 8, dialOpts{})
	time.Sleep(300 * time.Millisecond)
	n = strings.Count(dm.logs(), flushed)
	repair4()
	dm.waitFamilies(t, "isp1", [2]string{"up", "up"})
	dm.waitLogged(t, flushed, n, 5*time.Second)
	time.Sleep(stallAfter + 500*time.Millisecond)
	if b4 := heldBroken(t, "IPv4", held4, d.WAN2); b4 != 8 {
		t.Errorf("IPv4 failback: %d of 8 held IPv4 flows on isp2 broke, want all", b4)
	}
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

	dm.waitFamilies(t, "isp1", [2]string{"up", "up"})
	dm.waitFamilies(t, "isp2", [2]string{"up", "up"})
	if r := connectN(t, d.LAN, target6, srv6, 40, dialOpts{}); r.Failed != 0 || len(r.PerSource) != 2 {
		t.Fatalf("before the outage: %d of 40 IPv6 flows failed, far saw %v", r.Failed, r.PerSource)
	}

	// Forwarded IPv6 dies at ISP1 in both directions.
	outage(t, d.ISP1, "ipv6")
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
