package integration

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// farCounts counts, at the far end, the TCP packets to port arriving from
// each of the two uplinks (far's interfaces in1, in2): where a flow's
// packets really went, whatever the router believes.
func farCounts(t testing.TB, far, in1, in2 string, port int) func() (int, int) {
	t.Helper()
	nft(t, far, fmt.Sprintf(`table inet arrivals {
	counter via1 {}
	counter via2 {}
	chain in {
		type filter hook prerouting priority -300; policy accept;
		iifname %q tcp dport %d counter name via1
		iifname %q tcp dport %d counter name via2
	}
}
`, in1, port, in2, port))
	read := func(name string) int {
		out := run(t, far, "nft", "list", "counter", "inet", "arrivals", name)
		m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("counter %s:\n%s", name, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return func() (int, int) { return read("via1"), read("via2") }
}

// beforeApplyRun opens held connections from the LAN to service while
// main routes by the second uplink and no flowpin is there, then applies
// cfg (weights that hash most new flows to the first uplink), twice, and
// keeps the connections busy across both. It returns their fates, the
// far end's count of their packets per uplink (far's interfaces farIn1,
// farIn2) since apply, and a fresh batch made afterwards (the hash's view).
func beforeApplyRun(t *testing.T, d *dualWAN, service, farIn1, farIn2, cfg string, held int) ([]connStatus, [2]int, connectResult) {
	t.Helper()
	srv := startEchoServer(t, d.Far, hostPort(service, 0))
	target := hostPort(service, srv.Port())
	counts := farCounts(t, d.Far, farIn1, farIn2, srv.Port())
	ll := startLongLived(t, d.LAN, target, srv, held, dialOpts{})
	time.Sleep(500 * time.Millisecond)
	b1, b2 := counts()
	if b1 != 0 || b2 == 0 {
		t.Fatalf("before apply the flows sent %d packets by the first uplink and %d by the second, want 0 and some", b1, b2)
	}
	for range 2 {
		apply(t, d.Router, cfg)
		time.Sleep(stallAfter + 500*time.Millisecond)
	}
	a1, a2 := counts()
	status := ll.stop()
	srv.Reset()
	return status, [2]int{a1 - b1, a2 - b2}, connectN(t, d.LAN, target, srv, 60, dialOpts{})
}

// checkBeforeApply: every held flow lived, the far end saw it from the
// second uplink's address wan2 and none of its packets by the first
// uplink, and the fresh batch went mostly by the first (wan1), so the
// hash alone would have moved most held flows.
func checkBeforeApply(t *testing.T, status []connStatus, since [2]int, fresh connectResult, wan1, wan2 string) {
	t.Helper()
	broken := 0
	for i, s := range status {
		if s.Stalled || s.Err != nil || s.Echoes < 50 || s.Remote.Addr() != netip.MustParseAddr(wan2) {
			broken++
			t.Errorf("flow %d from before apply (%v, far saw %v) broke or moved: stalled=%v err=%v echoes=%d", i, s.Local, s.Remote, s.Stalled, s.Err, s.Echoes)
		}
	}
	a, b := fresh.PerSource[netip.MustParseAddr(wan1)], fresh.PerSource[netip.MustParseAddr(wan2)]
	t.Logf("%d of %d flows from before apply broken; their packets since apply: %d by uplink 1, %d by uplink 2; fresh flows after: %d/%d (%d failed)",
		broken, len(status), since[0], since[1], a, b, fresh.Failed)
	if since[0] != 0 || since[1] == 0 {
		t.Errorf("since apply the flows from before sent %d packets by the first uplink (want 0) and %d by the second (want some)", since[0], since[1])
	}
	if fresh.Failed != 0 || a <= 2*b {
		t.Errorf("fresh flows: %d/%d, %d failed; want most by the first uplink (else the hash would have moved none of the old)", a, b, fresh.Failed)
	}
}

// routerNAT is what a box has before flowpin: masquerade on its uplinks.
func routerNAT(t *testing.T, ns string, ifaces ...string) {
	nft(t, ns, fmt.Sprintf(`table inet before {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname { "%s" } masquerade
	}
}
`, strings.Join(ifaces, `", "`)))
}

// Two modems on wan0; before flowpin, main routes by modem2 and the
// router masquerades to its wan0 address. Flows from then on keep modem2
// across apply and a second apply, although the weights hash most flows
// to modem1: their LAN-side packets are routed by main, as before, and
// pinned to modem2 by the next hop main chose.
func TestTwoModemsFlowsFromBeforeApply(t *testing.T) {
	d := newTwoModems(t)
	routerNAT(t, d.Router, "wan0")
	for _, gw := range []string{d.GW1, d.GW2} {
		if err := ping(d.Router, "192.168.1.2", gw); err != nil {
			t.Fatalf("ping %s: %v", gw, err)
		}
	}
	run(t, d.Router, "ip", "route", "replace", "default", "via", d.GW2, "dev", "wan0")
	status, since, fresh := beforeApplyRun(t, d, d.Service, "m1", "m2", d.configModems(9, 1, ""), 20)
	checkBeforeApply(t, status, since, fresh, d.WAN1, d.WAN2)
}

// The same with two interfaces: a flow from before apply keeps its link
// (its NAT binding is the router's, on that link's address).
func TestFlowsFromBeforeApplyKeepLink(t *testing.T) {
	d := newDualWAN(t)
	routerNAT(t, d.Router, "wan1", "wan2")
	run(t, d.Router, "ip", "route", "replace", "default", "via", d.GW2, "dev", "wan2")
	status, since, fresh := beforeApplyRun(t, d, d.Service, "isp1", "isp2", d.config(9, 1), 20)
	checkBeforeApply(t, status, since, fresh, d.WAN1, d.WAN2)
}

// IPv6 on the shared interface: each modem's gateway6 is its IPv6 next
// hop (`rt ip6 nexthop`). IPv6 flows from before apply keep modem2, the
// way main sent them; new flows spread over both by weight; 30 pinned
// flows survive two re-weightings; down is exact.
func TestTwoModemsIPv6(t *testing.T) {
	d := newTwoModems6(t)
	routerNAT(t, d.Router, "wan0")
	run(t, d.Router, "ip", "-6", "route", "replace", "default", "via", d.GW2v6, "dev", "wan0")
	for _, gw := range []string{d.GW1, d.GW2, d.GW1v6, d.GW2v6} {
		if err := ping(d.Router, "", gw); err != nil {
			t.Fatalf("ping %s: %v", gw, err)
		}
	}
	s0 := state(t, d.Router)

	status, since, fresh := beforeApplyRun(t, d, d.Service6, "m1", "m2", d.configModems6(9, 1), 20)
	checkBeforeApply(t, status, since, fresh, d.WAN1v6, d.WAN2v6)
	table := run(t, d.Router, "nft", "list", "table", "inet", "flowpin")
	for _, want := range []string{`rt ip6 nexthop vmap @by_nexthop6_wan0`, `2001:db8:1::1 : goto save_modem1`, `2001:db8:1::fe : goto save_modem2`} {
		if !strings.Contains(table, want) {
			t.Errorf("the nft table has no %q:\n%s", want, table)
		}
	}

	held, fresh := reweightRun(t, d, d.Service6, d.configModems6, 30, 200, false)
	perLink := map[netip.Addr]int{}
	broken := 0
	for i, s := range held {
		perLink[s.Remote.Addr()]++
		if s.Stalled || s.Err != nil || s.Echoes < 50 {
			broken++
			t.Errorf("IPv6 connection %d (%v via %v) broke: stalled=%v err=%v echoes=%d maxRTT=%v", i, s.Local, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes, s.MaxRTT)
		}
	}
	t.Logf("held IPv6 connections per modem: %v; %d of %d broken by two re-weightings", perLink, broken, len(held))
	if perLink[netip.MustParseAddr(d.WAN1v6)] == 0 || perLink[netip.MustParseAddr(d.WAN2v6)] == 0 {
		t.Errorf("held IPv6 connections used %v, want both modems (else a re-weighting moves none)", perLink)
	}
	if fresh.Failed != 0 {
		t.Fatalf("%d new IPv6 connections failed after re-apply: %v", fresh.Failed, fresh.Errors[0])
	}
	checkSplitOf(t, "IPv6 over two modems after re-weighting", fresh.PerSource, d.WAN1v6, d.WAN2v6, 4, 1, 0.12)

	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the state before apply (-before +after):\n%s", diff)
	}
}
