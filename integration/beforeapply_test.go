package integration

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"
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

// beforeApplyRun opens held connections from the LAN while main routes
// by the second uplink (gw2 via dev2) and no flowpin is there, then
// applies cfg (weights that hash most new flows to the first uplink),
// twice, and keeps the connections busy across both. It returns their
// fates, the far end's count of their packets per uplink since apply,
// and a fresh batch made afterwards (the hash's view).
func beforeApplyRun(t *testing.T, d *dualWAN, farIn1, farIn2, gw2, dev2, cfg string, held int) ([]connStatus, [2]int, connectResult) {
	t.Helper()
	run(t, d.Router, "ip", "route", "replace", "default", "via", gw2, "dev", dev2)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
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
// second uplink's address and none of its packets by the first uplink,
// and the fresh batch went mostly by the first (so the hash alone would
// have moved most held flows).
func checkBeforeApply(t *testing.T, d *dualWAN, status []connStatus, since [2]int, fresh connectResult) {
	t.Helper()
	broken := 0
	for i, s := range status {
		if s.Stalled || s.Err != nil || s.Echoes < 50 || s.Remote.Addr() != netip.MustParseAddr(d.WAN2) {
			broken++
			t.Errorf("flow %d from before apply (%v, far saw %v) broke or moved: stalled=%v err=%v echoes=%d", i, s.Local, s.Remote, s.Stalled, s.Err, s.Echoes)
		}
	}
	a, b := onLinks(d, fresh.PerSource)
	t.Logf("%d of %d flows from before apply broken; their packets since apply: %d by uplink 1, %d by uplink 2; fresh flows after: %d/%d (%d failed)",
		broken, len(status), since[0], since[1], a, b, fresh.Failed)
	if since[0] != 0 || since[1] == 0 {
		t.Errorf("since apply the flows from before sent %d packets by the first uplink (want 0) and %d by the second (want some)", since[0], since[1])
	}
	if fresh.Failed != 0 || a <= 2*b {
		t.Errorf("fresh flows: %d/%d, %d failed; want most by the first uplink (else the hash would have moved none of the old)", a, b, fresh.Failed)
	}
}

// Two modems on wan0; before flowpin, main routes by modem2 and the
// router masquerades to its wan0 address. Flows from then on keep modem2
// across apply and a second apply, although the weights hash most flows
// to modem1: their LAN-side packets are routed by main, as before, and
// pinned to modem2 by the next hop main chose.
func TestTwoModemsFlowsFromBeforeApply(t *testing.T) {
	d := newTwoModems(t)
	nft(t, d.Router, `table ip before {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
`)
	for _, gw := range []string{d.GW1, d.GW2} {
		if err := ping(d.Router, "192.168.1.2", gw); err != nil {
			t.Fatalf("ping %s: %v", gw, err)
		}
	}
	status, since, fresh := beforeApplyRun(t, d, "m1", "m2", d.GW2, "wan0", d.configModems(9, 1, ""), 20)
	checkBeforeApply(t, d, status, since, fresh)
}

// The same with two interfaces: a flow from before apply keeps its link
// (its NAT binding is the router's, on that link's address).
func TestFlowsFromBeforeApplyKeepLink(t *testing.T) {
	d := newDualWAN(t)
	nft(t, d.Router, `table ip before {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname { "wan1", "wan2" } masquerade
	}
}
`)
	status, since, fresh := beforeApplyRun(t, d, "isp1", "isp2", d.GW2, "wan2", d.config(9, 1), 20)
	checkBeforeApply(t, d, status, since, fresh)
}
