package integration

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A point-to-point uplink (a tun session, as ppp0 or wg0) beside an
// Ethernet one, with gateway: auto and no default route through it in
// main: its table gets `default dev wan2`, new flows spread over both by
// weight, NATed to each link's address; verify and explain agree; down
// leaves the kernel as it was.
func TestPointToPointLink(t *testing.T) {
	d, _ := newPPPWAN(t)
	if out := run(t, d.Router, "ip", "-d", "link", "show", "wan2"); !strings.Contains(out, "POINTOPOINT") || !strings.Contains(out, "link/none") {
		t.Fatalf("wan2 is not a point-to-point link:\n%s", out)
	}
	foreignState(t, d.Router)
	s0 := state(t, d.Router)

	apply(t, d.Router, d.configP2P(3, 1))
	table := run(t, d.Router, "ip", "route", "show", "table", "102")
	if !regexp.MustCompile(`(?m)^default dev wan2 proto 201 src 198\.51\.100\.2 $`).MatchString(table) {
		t.Errorf("table 102 has no device-only default route:\n%s", table)
	}
	if balance := run(t, d.Router, "ip", "route", "show", "table", "100"); !strings.Contains(balance, "nexthop dev wan2 weight 1") {
		t.Errorf("the multipath route has no device-only leg for wan2:\n%s", balance)
	}
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	r := connectN(t, d.LAN, target, srv, 240, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d of 240 LAN connections failed, first: %v", r.Failed, r.Errors[0])
	}
	checkSplit(t, d, r.PerSource, 3, 1)
	if n := nftCounter(t, d.ISP2, "inet", "bcp38", "spoofed") + d.bcp38Drops(t, d.ISP1); n != 0 {
		t.Errorf("the ISPs dropped %d spoofed packets: something left by the wrong link", n)
	}

	cfg := writeFile(t, "p2p.yaml", d.configP2P(3, 1))
	if out, err := flowpin(t, d.Router, "verify", "-c", cfg); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	} else if !strings.Contains(out, "wan2 is point-to-point") {
		t.Errorf("verify does not check wan2 as point-to-point:\n%s", out)
	}
	out, err := flowpin(t, d.Router, "explain", "-c", cfg, d.Service, "--from", d.WAN2)
	if err != nil || !strings.Contains(out, "dev wan2") {
		t.Errorf("explain from wan2's address: %v\n%s", err, out)
	}
	out, err = flowpin(t, d.Router, "status", "-c", cfg)
	if err != nil || !strings.Contains(out, "dev wan2 (auto)") {
		t.Errorf("status: %v\n%s", err, out)
	}

	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the state before apply (-before +after):\n%s", diff)
	}
}

// The peer address given as the gateway is accepted; a gateway that is
// neither on a subnet of the interface nor its peer is one line naming
// file, line, field and value, and nothing is applied.
func TestPointToPointGatewayChecks(t *testing.T) {
	d, _ := newPPPWAN(t)
	s0 := state(t, d.Router)
	apply(t, d.Router, d.config(1, 1)) // gateway: 198.51.100.1, wan2's peer
	if table := run(t, d.Router, "ip", "route", "show", "table", "102"); !strings.Contains(table, "default dev wan2") {
		t.Errorf("table 102 with the peer as gateway:\n%s", table)
	}
	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	cfg := writeFile(t, "bad.yaml", strings.Replace(d.config(1, 1), "gateway: "+d.GW2, "gateway: 198.51.100.9", 1))
	out, err := flowpin(t, d.Router, "apply", "-c", cfg)
	want := cfg + ":9: links[1].gateway: 198.51.100.9 is neither on a subnet of wan2 (its addresses: [198.51.100.2/32]) nor its peer (198.51.100.1/32)"
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("apply with an off-link gateway: %v\n%s\nwant %q", err, out, want)
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("a refused apply changed the kernel (-before +after):\n%s", diff)
	}
}

// 30 long-lived flows over both links survive two re-weightings, and
// fresh flows follow the last weights.
func TestPointToPointPinning(t *testing.T) {
	d, _ := newPPPWAN(t)
	status, fresh := reweightRun(t, d, d.Service, d.configP2P, 30, 200, false)
	perLink := map[netip.Addr]int{}
	for i, s := range status {
		perLink[s.Remote.Addr()]++
		if s.Stalled || s.Err != nil || s.Echoes < 50 {
			t.Errorf("connection %d (%v via %v) broke: stalled=%v err=%v echoes=%d maxRTT=%v", i, s.Local, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes, s.MaxRTT)
		}
	}
	t.Logf("long-lived connections per link: %v", perLink)
	if perLink[netip.MustParseAddr(d.WAN1)] == 0 || perLink[netip.MustParseAddr(d.WAN2)] == 0 {
		t.Errorf("held connections used %v, want both links (else a re-weighting moves none)", perLink)
	}
	if fresh.Failed != 0 {
		t.Fatalf("%d new connections failed after re-apply: %v", fresh.Failed, fresh.Errors[0])
	}
	checkSplit(t, d, fresh.PerSource, 4, 1)
}

// The daemon on a point-to-point link: probes out of it (to its peer, with
// no targets given), a silent failure (the session process stops, carrier
// up) costs new flows for less than 2.5 s; the end of the session takes
// the link down at once and deletes its flows; a new session with a new
// address is adopted, NATed to that address, with nothing left of the old.
func TestPointToPointSessions(t *testing.T) {
	d, session := newPPPWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	// No targets: each link probes its gateway; wan2's is its peer.
	check := "{interval: 200ms, timeout: 200ms, fall: 3, rise: 3}"
	cfg := strings.ReplaceAll(d.configP2P(1, 1), "    nat: true\n", "    nat: true\n    check: "+check+"\n")
	dm := startDaemon(t, d.Router, cfg)
	dm.waitState(t, "isp1", "up", 5*time.Second)
	dm.waitState(t, "isp2", "up", 5*time.Second)
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	// Silent failure.
	start := time.Now()
	thaw := session.freeze(t)
	took := untilAllSucceed(t, d, srv, start, 6*time.Second)
	t.Logf("silent failure of the session: new connections all succeed again after %v", took.Round(time.Millisecond))
	// 3 rounds of 200 ms: about 0.8 s; its IPv6 twin took 1.2 s on a
	// loaded machine. 2.5 s is the bound, generous, as the other failover
	// tests have it.
	if took > 2500*time.Millisecond {
		t.Errorf("new flows failed for %v after the session went silent, want under 2.5 s", took)
	}
	if l := dm.waitState(t, "isp2", "down", 2*time.Second); !strings.Contains(l.Reason, d.GW2) {
		t.Errorf("reason %q does not name the peer it probed", l.Reason)
	}
	thaw()
	dm.waitState(t, "isp2", "up", 5*time.Second)

	// Flows on both links, then the session ends.
	held := startLongLived(t, d.LAN, target, srv, 16, dialOpts{})
	time.Sleep(500 * time.Millisecond)
	onISP2 := func() int {
		out, _ := tryRun(d.Router, "conntrack", "-L", "-p", "tcp", "--dport", fmt.Sprint(srv.Port()), "-m", "0x200/0xff00")
		return strings.Count(out, "dport=")
	}
	if onISP2() == 0 {
		t.Fatal("no flow on isp2 before the session ends")
	}
	ended := time.Now()
	session.end()
	// The reason, not the time, says it was the interface's going and not
	// the probes (3 rounds of 200 ms): a loaded machine may take longer
	// than the probes would to show it.
	l := dm.waitState(t, "isp2", "down", 3*time.Second)
	t.Logf("session ended: isp2 down after %v (%s)", time.Since(ended).Round(time.Millisecond), l.Reason)
	// The kernel reports the carrier's loss just before the removal;
	// either goes first.
	if !strings.Contains(l.Reason, "removed") && !strings.Contains(l.Reason, "carrier lost on wan2") {
		t.Errorf("reason %q does not say the interface went", l.Reason)
	}
	deadline := time.Now().Add(2 * time.Second)
	for onISP2() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := onISP2(); n != 0 {
		t.Errorf("%d flows still marked for isp2 2 s after its session ended", n)
	}
	held.stop()
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 40, dialOpts{})
	if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 40 || b != 0 {
		t.Errorf("between sessions: %d/%d on isp1/isp2, %d failed; want 40/0/0", a, b, r.Failed)
	}

	// A new session with a new address.
	const newAddr = "198.51.100.7"
	d.startSession(t, newAddr)
	dm.waitState(t, "isp2", "up", 5*time.Second)
	srv.Reset()
	r = connectN(t, d.LAN, target, srv, 120, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d of 120 failed on the new session: %v", r.Failed, r.Errors[0])
	}
	t.Logf("new session: the far end saw %v", r.PerSource)
	if r.PerSource[netip.MustParseAddr(newAddr)] == 0 || r.PerSource[netip.MustParseAddr(d.WAN2)] != 0 || len(r.PerSource) != 2 {
		t.Errorf("new session: far end saw %v, want %s and %s only", r.PerSource, d.WAN1, newAddr)
	}
	if rules := run(t, d.Router, "ip", "rule", "show"); strings.Contains(rules, d.WAN2) || !strings.Contains(rules, "from "+newAddr+" lookup 102") {
		t.Errorf("source rules do not follow the new address:\n%s", rules)
	}
	if table := run(t, d.Router, "ip", "route", "show", "table", "102"); strings.Contains(table, d.WAN2) || !strings.Contains(table, "default dev wan2 proto 201 src "+newAddr) {
		t.Errorf("table 102 does not follow the new address:\n%s", table)
	}
	if ct, _ := tryRun(d.Router, "conntrack", "-L", "-p", "tcp"); strings.Contains(ct, d.WAN2) {
		t.Errorf("flows of the old address remain:\n%s", ct)
	}
	if _, err := dm.stop(); err != nil {
		t.Errorf("daemon: %v\n%s", err, dm.logs())
	}
}
