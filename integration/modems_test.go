package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newTwoModems is two ISP modems on one switch behind the router's wan0,
// each doing its own NAT, as consumer modems do:
//
//	lan --- router wan0 192.168.1.2 ---[sw br0]--- modem1 192.168.1.1   ==core 100.64.1.1== far (203.0.113.10 on lo)
//	                                          \--- modem2 192.168.1.254 ==core 100.64.2.1==/
//
// The router tells the modems apart only by next hop. The far end sees a
// flow's modem by its source (each modem masquerades to its core
// address), so a flow moved to the other modem mid-stream arrives with
// another source and dies, as on the real Internet. Each modem forwards
// TCP port 8022 to the router (a port forward).
//
// The returned dualWAN's ISP1/ISP2 are the modems, GW1/GW2 their LAN
// addresses, WAN1/WAN2 their public (core) addresses: what the far end
// sees, as the dual-WAN helpers expect.
func newTwoModems(t testing.TB) *dualWAN {
	t.Helper()
	return buildTwoModems(t, false)
}

// newTwoModems6 is newTwoModems with IPv6 beside IPv4 on the same wires:
//
//	lan fd00:77::2 --- router wan0 2001:db8:1::2 ---[br0]--- modem1 2001:db8:1::1  ==core 2001:db8:a::1== far (2001:db8:ff::10 on lo)
//	                                                   \--- modem2 2001:db8:1::fe ==core 2001:db8:b::1==/
//
// Each modem masquerades IPv6 to its core address too, so the far end
// tells the modems apart in both families. Main's IPv6 default route is
// via modem1, as a router advertisement or a static route would give.
func newTwoModems6(t testing.TB) *dualWAN {
	t.Helper()
	return buildTwoModems(t, true)
}

func buildTwoModems(t testing.TB, ipv6 bool) *dualWAN {
	t.Helper()
	newL := newLab
	if ipv6 {
		newL = newLab6
	}
	l := newL(t)
	d := &dualWAN{
		LAN: l.addNS("lan"), Router: l.addNS("router"),
		ISP1: l.addNS("modem1"), ISP2: l.addNS("modem2"), Far: l.addNS("far"),
		LANHost: "10.77.0.2", RouterLAN: "10.77.0.1",
		WAN1: "100.64.1.1", WAN2: "100.64.2.1",
		GW1: "192.168.1.1", GW2: "192.168.1.254",
		Service: "203.0.113.10",
	}
	sw := l.addNS("sw")
	run(t, sw, "ip", "link", "add", "br0", "type", "bridge")
	linkUp(t, sw, "br0")
	veth(t, d.LAN, "eth0", d.Router, "lan")
	veth(t, sw, "router", d.Router, "wan0")
	veth(t, sw, "m1", d.ISP1, "lan")
	veth(t, sw, "m2", d.ISP2, "lan")
	for _, p := range []string{"router", "m1", "m2"} {
		run(t, sw, "ip", "link", "set", "dev", p, "master", "br0")
	}
	veth(t, d.ISP1, "core", d.Far, "m1")
	veth(t, d.ISP2, "core", d.Far, "m2")

	addAddr(t, d.LAN, "eth0", "10.77.0.2/24")
	addRoute(t, d.LAN, "default", "via", d.RouterLAN)
	addAddr(t, d.Router, "lan", "10.77.0.1/24")
	addAddr(t, d.Router, "wan0", "192.168.1.2/24")
	setSysctl(t, d.Router, "net.ipv4.ip_forward", "1")
	// What the box has before flowpin: one default route, via modem1.
	addRoute(t, d.Router, "default", "via", d.GW1, "dev", "wan0")

	for _, m := range []struct{ ns, lan, core, far string }{
		{d.ISP1, "192.168.1.1/24", "100.64.1.1/30", "100.64.1.2"},
		{d.ISP2, "192.168.1.254/24", "100.64.2.1/30", "100.64.2.2"},
	} {
		addAddr(t, m.ns, "lan", m.lan)
		addAddr(t, m.ns, "core", m.core)
		setSysctl(t, m.ns, "net.ipv4.ip_forward", "1")
		addRoute(t, m.ns, "default", "via", m.far)
		nft(t, m.ns, `table ip modem {
	chain pre {
		type nat hook prerouting priority dstnat;
		iifname "core" tcp dport 8022 dnat to 192.168.1.2
	}
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "core" masquerade
	}
}
`)
	}
	addAddr(t, d.Far, "m1", "100.64.1.2/30")
	addAddr(t, d.Far, "m2", "100.64.2.2/30")
	addAddr(t, d.Far, "lo", "203.0.113.10/32")
	if ipv6 {
		d.addModems6(t)
	}
	return d
}

func (d *dualWAN) addModems6(t testing.TB) {
	t.Helper()
	d.LANHost6, d.RouterLAN6 = "fd00:77::2", "fd00:77::1"
	d.WAN1v6, d.WAN2v6 = "2001:db8:a::1", "2001:db8:b::1"
	d.GW1v6, d.GW2v6 = "2001:db8:1::1", "2001:db8:1::fe"
	d.Service6 = "2001:db8:ff::10"
	addAddr6(t, d.LAN, "eth0", "fd00:77::2/64")
	addRoute6(t, d.LAN, "default", "via", d.RouterLAN6)
	addAddr6(t, d.Router, "lan", "fd00:77::1/64")
	addAddr6(t, d.Router, "wan0", "2001:db8:1::2/64")
	setSysctl(t, d.Router, "net.ipv6.conf.all.forwarding", "1")
	addRoute6(t, d.Router, "default", "via", d.GW1v6, "dev", "wan0")
	for _, m := range []struct{ ns, lan, core, far string }{
		{d.ISP1, d.GW1v6 + "/64", d.WAN1v6 + "/64", "2001:db8:a::2"},
		{d.ISP2, d.GW2v6 + "/64", d.WAN2v6 + "/64", "2001:db8:b::2"},
	} {
		addAddr6(t, m.ns, "lan", m.lan)
		addAddr6(t, m.ns, "core", m.core)
		setSysctl(t, m.ns, "net.ipv6.conf.all.forwarding", "1")
		addRoute6(t, m.ns, "default", "via", m.far)
		nft(t, m.ns, `table ip6 modem6 {
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "core" masquerade
	}
}
`)
	}
	addAddr6(t, d.Far, "m1", "2001:db8:a::2/64")
	addAddr6(t, d.Far, "m2", "2001:db8:b::2/64")
	addAddr6(t, d.Far, "lo", d.Service6+"/128")
	settle6(t, d.LAN, d.Router, d.ISP1, d.ISP2, d.Far)
}

// configModems6 is configModems with each modem's IPv6 next hop.
func (d *dualWAN) configModems6(w1, w2 int) string {
	return fmt.Sprintf(`links:
  - name: modem1
    interface: wan0
    gateway: %s
    gateway6: %s
    weight: %d
    nat: true
  - name: modem2
    interface: wan0
    gateway: %s
    gateway6: %s
    weight: %d
    nat: true
`, d.GW1, d.GW1v6, w1, d.GW2, d.GW2v6, w2)
}

// configModems is the config of the two modems on wan0, told apart by
// their gateways; check, if not empty, is both links' health check.
func (d *dualWAN) configModems(w1, w2 int, check string) string {
	c := ""
	if check != "" {
		c = "    check: " + check + "\n"
	}
	return fmt.Sprintf(`links:
  - name: modem1
    interface: wan0
    gateway: %s
    weight: %d
    nat: true
%s  - name: modem2
    interface: wan0
    gateway: %s
    weight: %d
    nat: true
%s`, d.GW1, w1, c, d.GW2, w2, c)
}

// Two uplinks on one interface: new flows spread over both modems by
// weight, each modem's flows leave by it (or the far end would see the
// other modem's address and the connection would fail); a connection
// forwarded by either modem is answered through that modem, also when the
// balance route alone would send the reply to the other; down is exact.
func TestTwoModemsOneInterface(t *testing.T) {
	d := newTwoModems(t)
	foreignState(t, d.Router)
	s0 := state(t, d.Router)

	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	// The router has talked to its modems: both are in its neighbour
	// table, which the ether saddr rules are made from.
	for _, gw := range []string{d.GW1, d.GW2} {
		if err := ping(d.Router, "192.168.1.2", gw); err != nil {
			t.Fatalf("ping %s: %v", gw, err)
		}
	}
	apply(t, d.Router, d.configModems(3, 1, ""))
	if balance := run(t, d.Router, "ip", "route", "show", "table", "100"); !strings.Contains(balance, "nexthop via 192.168.1.1 dev wan0 weight 3") || !strings.Contains(balance, "nexthop via 192.168.1.254 dev wan0 weight 1") {
		t.Errorf("the multipath route does not name both modems on wan0:\n%s", balance)
	}
	table := run(t, d.Router, "nft", "list", "table", "inet", "flowpin")
	// wan0's own chains tell the modems apart: by next hop leaving, by
	// the sending modem's link-layer address arriving.
	for _, want := range []string{`rt ip nexthop vmap @by_nexthop_wan0`, `192.168.1.1 : goto save_modem1`, `192.168.1.254 : goto save_modem2`,
		`ether saddr vmap @by_mac_wan0`, `: goto from_modem1`, `: goto from_modem2`} {
		if !strings.Contains(table, want) {
			t.Errorf("the nft table has no %q:\n%s", want, table)
		}
	}
	r := connectN(t, d.LAN, target, srv, 240, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d of 240 LAN connections failed, first: %v", r.Failed, r.Errors[0])
	}
	checkSplit(t, d, r.PerSource, 3, 1)

	// Port forwards: the far end connects to each modem's public address;
	// the modem forwards to the router, whose answer must go back through
	// the same modem (through the other, it would leave with the wrong
	// address). 40 each: with only the balance route, about a quarter of
	// modem2's and three quarters of modem1's would be answered wrongly.
	fwd := startEchoServer(t, d.Router, "0.0.0.0:8022")
	for _, modem := range []string{d.WAN1, d.WAN2} {
		r := connectN(t, d.Far, modem+":8022", fwd, 40, dialOpts{Timeout: 2 * time.Second})
		t.Logf("forwarded by %s: %d of 40 answered, router saw %v", modem, r.OK, r.PerSource)
		if r.Failed != 0 {
			t.Errorf("%d of 40 connections forwarded by the modem at %s failed, first: %v", r.Failed, modem, r.Errors[0])
		}
	}

	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the state before apply (-before +after):\n%s", diff)
	}
}

// 30 long-lived flows over both modems survive two re-weightings, and
// fresh flows follow the last weights.
func TestTwoModemsPinning(t *testing.T) {
	d := newTwoModems(t)
	cfg := func(w1, w2 int) string { return d.configModems(w1, w2, "") }
	status, fresh := reweightRun(t, d, d.Service, cfg, 30, 200, false)
	perLink := map[netip.Addr]int{}
	broken := 0
	for i, s := range status {
		perLink[s.Remote.Addr()]++
		if s.Stalled || s.Err != nil || s.Echoes < 50 {
			broken++
			t.Errorf("connection %d (%v via %v) broke: stalled=%v err=%v echoes=%d maxRTT=%v", i, s.Local, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes, s.MaxRTT)
		}
	}
	t.Logf("long-lived connections per modem: %v; %d of %d broken by two re-weightings", perLink, broken, len(status))
	if perLink[netip.MustParseAddr(d.WAN1)] == 0 || perLink[netip.MustParseAddr(d.WAN2)] == 0 {
		t.Errorf("held connections used %v, want both modems (else a re-weighting moves none)", perLink)
	}
	if fresh.Failed != 0 {
		t.Fatalf("%d new connections failed after re-apply: %v", fresh.Failed, fresh.Errors[0])
	}
	checkSplit(t, d, fresh.PerSource, 4, 1)
}

// The daemon probes out of each modem; when modem2's uplink dies silently
// (its port on the switch, and wan0, stay up), new flows stop failing
// within 2.5 s, and come back to it when it recovers.
func TestTwoModemsFailover(t *testing.T) {
	d := newTwoModems(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	check := fmt.Sprintf("{targets: [%s], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}", d.Service)
	dm := startDaemon(t, d.Router, d.configModems(1, 1, check))
	dm.waitState(t, "modem1", "up", 5*time.Second)
	dm.waitState(t, "modem2", "up", 5*time.Second)
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)
	// The daemon started before the router had resolved either modem; its
	// probes resolved them, and it followed the neighbour table: a
	// connection forwarded by modem2 is answered through modem2.
	fwd := startEchoServer(t, d.Router, "0.0.0.0:8022")
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(run(t, d.Router, "nft", "list", "chain", "inet", "flowpin", "prerouting"), "save modem2") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if r := connectN(t, d.Far, d.WAN2+":8022", fwd, 20, dialOpts{Timeout: 2 * time.Second}); r.Failed != 0 {
		t.Errorf("%d of 20 connections forwarded by modem2 failed under the daemon, first: %v", r.Failed, r.Errors[0])
	}

	start := time.Now()
	nft(t, d.ISP2, `table netdev outage {
	chain in {
		type filter hook ingress device "core" priority -500; policy drop;
	}
}
`)
	took := untilAllSucceed(t, d, srv, start, 6*time.Second)
	t.Logf("modem2's uplink died silently: new connections all succeed again after %v", took.Round(time.Millisecond))
	// 3 rounds of 300 ms and the round under way: 0.9 to 1.2 s, which a
	// 1.5 s bound left little room on a loaded machine; 2.5 s still fails
	// a detection a few rounds late.
	if took > 2500*time.Millisecond {
		t.Errorf("new flows failed for %v after modem2's uplink died, want under 2.5 s", took)
	}
	l := dm.waitState(t, "modem2", "down", 2*time.Second)
	if !strings.Contains(l.Reason, "probes lost to "+d.Service) {
		t.Errorf("reason %q", l.Reason)
	}
	if s := dm.waitState(t, "modem1", "up", time.Second); s.State != "up" {
		t.Errorf("modem1: %+v", s)
	}
	if out := run(t, d.Router, "ip", "link", "show", "wan0"); !strings.Contains(out, "state UP") {
		t.Errorf("wan0 is not up:\n%s", out)
	}
	srv.Reset()
	r := connectN(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, srv.Port()), srv, 40, dialOpts{})
	if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 40 || b != 0 {
		t.Errorf("modem2 down: %d/%d on modem1/modem2, %d failed; want 40/0/0", a, b, r.Failed)
	}

	run(t, d.ISP2, "nft", "delete", "table", "netdev", "outage")
	dm.waitState(t, "modem2", "up", 5*time.Second)
	srv.Reset()
	r = connectN(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, srv.Port()), srv, 80, dialOpts{})
	if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a == 0 || b == 0 {
		t.Errorf("modem2 back: %d/%d on modem1/modem2, %d failed; want both", a, b, r.Failed)
	}
	if _, err := dm.stop(); err != nil {
		t.Errorf("daemon: %v\n%s", err, dm.logs())
	}
}

// Config errors on a shared interface name file, line, field and value,
// and nothing is applied.
func TestTwoModemsConfigErrors(t *testing.T) {
	d := newTwoModems(t)
	s0 := state(t, d.Router)
	for _, tc := range []struct{ name, cfg, want string }{
		{"same gateway", strings.Replace(d.configModems(1, 1, ""), d.GW2, d.GW1, 1),
			":9: links[1].gateway: 192.168.1.1 on interface wan0 is already links[0]'s: links on one interface need different next hops"},
		{"gateway off the subnet", strings.Replace(d.configModems(1, 1, ""), d.GW2, "192.168.7.254", 1),
			":9: links[1].gateway: 192.168.7.254 is neither on a subnet of wan0 (its addresses: [192.168.1.2/24]) nor its peer (it is not point-to-point)"},
	} {
		cfg := writeFile(t, "bad.yaml", tc.cfg)
		out, err := flowpin(t, d.Router, "apply", "-c", cfg)
		if err == nil || !strings.Contains(out, cfg+tc.want) {
			t.Errorf("%s: %v\n%s\nwant %q", tc.name, err, out, cfg+tc.want)
		}
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("a refused apply changed the kernel (-before +after):\n%s", diff)
	}
}
