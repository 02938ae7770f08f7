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
	table := fmt.Sprintf("arrivals%d", port)
	nft(t, far, fmt.Sprintf(`table inet %s {
	counter via1 {}
	counter via2 {}
	chain in {
		type filter hook prerouting priority -300; policy accept;
		iifname %q tcp dport %d counter name via1
		iifname %q tcp dport %d counter name via2
	}
}
`, table, in1, port, in2, port))
	read := func(name string) int {
		out := run(t, far, "nft", "list", "counter", "inet", table, name)
		m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("counter %s:\n%s", name, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return func() (int, int) { return read("via1"), read("via2") }
}

// beforeApply is what became of held flows from before apply to one
// service: their fates, the far end's count of their packets per uplink
// since apply, and a fresh batch made afterwards (the hash's view).
type beforeApply struct {
	status []connStatus
	since  [2]int
	fresh  connectResult
}

// beforeApplyRun opens held connections from the LAN to each service
// while main routes by the second uplink and no flowpin is there, then
// applies cfg (weights that hash most new flows to the first uplink),
// twice, and keeps the connections busy across both; the far end counts
// their packets by its interfaces farIn1, farIn2.
func beforeApplyRun(t *testing.T, d *dualWAN, services []string, farIn1, farIn2, cfg string, held int) []beforeApply {
	t.Helper()
	type run1 struct {
		srv    *echoServer
		target string
		counts func() (int, int)
		ll     *longLived
		b      [2]int
	}
	runs := make([]run1, len(services))
	for i, service := range services {
		r := &runs[i]
		r.srv = startEchoServer(t, d.Far, hostPort(service, 0))
		r.target = hostPort(service, r.srv.Port())
		r.counts = farCounts(t, d.Far, farIn1, farIn2, r.srv.Port())
		r.ll = startLongLived(t, d.LAN, r.target, r.srv, held, dialOpts{})
	}
	time.Sleep(500 * time.Millisecond)
	for i := range runs {
		r := &runs[i]
		r.b[0], r.b[1] = r.counts()
		if r.b[0] != 0 || r.b[1] == 0 {
			t.Fatalf("%s: before apply the flows sent %d packets by the first uplink and %d by the second, want 0 and some", services[i], r.b[0], r.b[1])
		}
	}
	for range 2 {
		apply(t, d.Router, cfg)
		time.Sleep(stallAfter + 500*time.Millisecond)
	}
	out := make([]beforeApply, len(runs))
	for i := range runs {
		r := &runs[i]
		a1, a2 := r.counts()
		out[i].since = [2]int{a1 - r.b[0], a2 - r.b[1]}
		out[i].status = r.ll.stop()
	}
	for i := range runs {
		r := &runs[i]
		r.srv.Reset()
		out[i].fresh = connectN(t, d.LAN, r.target, r.srv, 60, dialOpts{})
	}
	return out
}

// checkBeforeApply: every held flow lived, the far end saw it from the
// second uplink's address wan2 and none of its packets by the first
// uplink, and the fresh batch went mostly by the first (wan1), so the
// hash alone would have moved most held flows.
func checkBeforeApply(t *testing.T, r beforeApply, wan1, wan2 string) {
	t.Helper()
	status, since, fresh := r.status, r.since, r.fresh
	broken := 0
	for i, s := range status {
		if s.Stalled || s.Err != nil || s.Echoes < 50 || s.Remote.Addr() != netip.MustParseAddr(wan2) {
			broken++
			t.Errorf("flow %d from before apply (%v, far saw %v) broke or moved: stalled=%v err=%v echoes=%d", i, s.Local, s.Remote, s.Stalled, s.Err, s.Echoes)
		}
	}
	a, b := fresh.PerSource[netip.MustParseAddr(wan1)], fresh.PerSource[netip.MustParseAddr(wan2)]
	t.Logf("%d of %d flows from before apply (far saw %s) broken; their packets since apply: %d by uplink 1, %d by uplink 2; fresh flows after: %d by %s, %d by %s (%d failed)",
		broken, len(status), wan2, since[0], since[1], a, wan1, b, wan2, fresh.Failed)
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

// Before flowpin, main routes by isp2 and the router masquerades on both
// uplinks. Flows from then on keep isp2 (their NAT binding is the
// router's, on isp2's address) across apply and a second apply, although
// the weights hash most flows to isp1: their LAN-side packets are routed
// by main, as before, and pinned to isp2 as they leave by it.
func TestFlowsFromBeforeApplyKeepLink(t *testing.T) {
	d := newDualWAN(t)
	routerNAT(t, d.Router, "wan1", "wan2")
	run(t, d.Router, "ip", "route", "replace", "default", "via", d.GW2, "dev", "wan2")
	r := beforeApplyRun(t, d, []string{d.Service}, "isp1", "isp2", d.config(9, 1), 20)
	checkBeforeApply(t, r[0], d.WAN1, d.WAN2)
}

// Two modems on wan0 in both families, each modem's gateway6 its IPv6
// next hop (`rt ip6 nexthop`). Before flowpin, main routes by modem2 and
// the router masquerades to its wan0 addresses. Flows from then on, IPv4
// and IPv6, keep modem2 across apply and a second apply, although the
// weights hash most flows to modem1: their LAN-side packets are routed by
// main, as before, and pinned to modem2 by the next hop main chose. Then
// new IPv6 flows spread over both by weight; 30 pinned IPv6 flows survive
// two re-weightings; down is exact.
func TestTwoModemsDualStack(t *testing.T) {
	d := newTwoModems6(t)
	routerNAT(t, d.Router, "wan0")
	run(t, d.Router, "ip", "route", "replace", "default", "via", d.GW2, "dev", "wan0")
	run(t, d.Router, "ip", "-6", "route", "replace", "default", "via", d.GW2v6, "dev", "wan0")
	for _, gw := range []string{d.GW1, d.GW2, d.GW1v6, d.GW2v6} {
		if err := ping(d.Router, "", gw); err != nil {
			t.Fatalf("ping %s: %v", gw, err)
		}
	}
	s0 := state(t, d.Router)

	r := beforeApplyRun(t, d, []string{d.Service, d.Service6}, "m1", "m2", d.configModems6(9, 1), 20)
	checkBeforeApply(t, r[0], d.WAN1, d.WAN2)
	checkBeforeApply(t, r[1], d.WAN1v6, d.WAN2v6)
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
