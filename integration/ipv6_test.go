package integration

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// hostPort joins an address of either family and a port ("[2001:db8::1]:80").
func hostPort(addr string, port int) string {
	return net.JoinHostPort(addr, fmt.Sprint(port))
}

// checkSplitOf asserts that the connections counted at the far end came from
// exactly the two addresses a1 and a2, split by the weights w1:w2 within
// tol (about three standard deviations of the share for the batch size).
func checkSplitOf(t *testing.T, what string, perSource map[netip.Addr]int, a1, a2 string, w1, w2 int, tol float64) {
	t.Helper()
	want := float64(w1) / float64(w1+w2)
	got := share(perSource, a1)
	t.Logf("%s: far end saw %v: %s share %.2f, weights want %.2f", what, perSource, a1, got, want)
	if got < want-tol || got > want+tol {
		t.Errorf("%s: %s carried %.2f of new connections; weights %d:%d want %.2f", what, a1, got, w1, w2, want)
	}
	if n := len(perSource); n != 2 || perSource[netip.MustParseAddr(a1)] == 0 || perSource[netip.MustParseAddr(a2)] == 0 {
		t.Errorf("%s: connections arrived from %v, want only %s and %s", what, perSource, a1, a2)
	}
}

// The dual-WAN NAT box with IPv6 beside IPv4: NAT66 and the IPv6 multipath
// route let the ULA LAN out over both ISPs by weight, replies to each WAN's
// IPv6 address leave by that WAN, and IPv4 keeps working at the same time.
func TestDualStackNAT(t *testing.T) {
	d := newDualWAN6(t)
	srvFar6 := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	srvFar4 := startEchoServer(t, d.Far, hostPort(d.Service, 0))
	srvRouter6 := startEchoServer(t, d.Router, "[::]:0")
	far6 := hostPort(d.Service6, srvFar6.Port())
	far4 := hostPort(d.Service, srvFar4.Port())

	// Before: the LAN's ULA source leaves un-NATed by main's default
	// (wan1) and ISP1 drops it; a reply from WAN2's IPv6 address leaves by
	// wan1 too and is dropped the same way.
	before := d.bcp38Drops6(t, d.ISP1)
	if r := connectN(t, d.LAN, far6, srvFar6, 1, dialOpts{Timeout: time.Second}); r.OK != 0 {
		t.Fatal("LAN -> far over IPv6 worked before apply: the topology does not model the problem")
	}
	if d.bcp38Drops6(t, d.ISP1) == before {
		t.Error("ISP1 dropped no IPv6: the failure before apply was not the un-NATed ULA source")
	}
	before = d.bcp38Drops6(t, d.ISP1)
	if r := connectN(t, d.Far, hostPort(d.WAN2v6, srvRouter6.Port()), srvRouter6, 1, dialOpts{Timeout: time.Second}); r.OK != 0 {
		t.Fatal("far -> WAN2's IPv6 address worked before apply: the topology does not model the asymmetric reply")
	}
	if d.bcp38Drops6(t, d.ISP1) == before {
		t.Error("ISP1 dropped no IPv6: the failure before apply was not the reply by the wrong link")
	}

	out := apply(t, d.Router, d.config6(3, 1))
	t.Log(strings.TrimSpace(out))
	if !strings.Contains(out, "IPv4 2 of 2 links, IPv6 2 of 2 links") {
		t.Errorf("apply did not put both links of both families in the multipath route: %s", out)
	}

	// Inbound to each WAN's IPv6 address: answered by the same link (a
	// reply by the other one would be dropped by BCP38 and counted).
	drops := func() int {
		return d.bcp38Drops6(t, d.ISP1) + d.bcp38Drops6(t, d.ISP2) + d.bcp38Drops(t, d.ISP1) + d.bcp38Drops(t, d.ISP2)
	}
	drops0 := drops()
	for _, dst := range []string{d.WAN1v6, d.WAN2v6} {
		if err := pingTimeout(d.Far, "", dst, 2*time.Second); err != nil {
			t.Errorf("ping far -> %s after apply: %v", dst, err)
		}
		srvRouter6.Reset()
		r := connectN(t, d.Far, hostPort(dst, srvRouter6.Port()), srvRouter6, 20, dialOpts{})
		if r.Failed != 0 {
			t.Errorf("TCP far -> %s: %d of 20 failed: %v", dst, r.Failed, r.Errors[0])
		}
		if got := srvRouter6.Sources(); got[netip.MustParseAddr(d.Service6)] != r.OK {
			t.Errorf("TCP far -> %s: router saw %v", dst, got)
		}
	}

	// ICMPv6 echo through NAT66, and the router's own IPv6 connections:
	// unbound (spread by the multipath route), and bound to each WAN
	// address (leaving by that WAN).
	if err := pingTimeout(d.LAN, "", d.Service6, 2*time.Second); err != nil {
		t.Errorf("ping LAN -> far over IPv6: %v", err)
	}
	for _, src := range []string{"", d.WAN1v6, d.WAN2v6} {
		srvFar6.Reset()
		r := connectN(t, d.Router, far6, srvFar6, 20, dialOpts{Src: src})
		got := srvFar6.Sources()
		switch {
		case r.Failed != 0:
			t.Errorf("router (src %q) -> far over IPv6: %d of 20 failed: %v", src, r.Failed, r.Errors[0])
		case src == "" && len(got) != 2:
			t.Errorf("the router's unbound IPv6 flows arrived from %v, want both WAN addresses", got)
		case src != "" && got[netip.MustParseAddr(src)] != 20:
			t.Errorf("router (src %s) -> far: arrived from %v", src, got)
		}
	}
	srvFar6.Reset()

	// 120 IPv6 and 120 IPv4 flows from the LAN at the same time.
	var r6, r4 connectResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r6 = connectN(t, d.LAN, far6, srvFar6, 120, dialOpts{}) }()
	go func() { defer wg.Done(); r4 = connectN(t, d.LAN, far4, srvFar4, 120, dialOpts{}) }()
	wg.Wait()
	if r6.Failed != 0 {
		t.Errorf("%d of 120 IPv6 LAN connections failed, first: %v", r6.Failed, r6.Errors[0])
	}
	if r4.Failed != 0 {
		t.Errorf("%d of 120 IPv4 LAN connections failed, first: %v", r4.Failed, r4.Errors[0])
	}
	// n=120 at 3:1: the share's standard deviation is 0.04.
	checkSplitOf(t, "IPv6", r6.PerSource, d.WAN1v6, d.WAN2v6, 3, 1, 0.12)
	checkSplitOf(t, "IPv4", r4.PerSource, d.WAN1, d.WAN2, 3, 1, 0.12)
	if n := drops() - drops0; n != 0 {
		t.Errorf("ISPs dropped %d spoofed packets after apply: something left by the wrong link or un-NATed", n)
	}
}

// pinningRun6 is pinningRun over IPv6: 30 held flows, 120 fresh ones.
func pinningRun6(t *testing.T, breakPinning bool) ([]connStatus, connectResult, *dualWAN) {
	d := newDualWAN6(t)
	status, fresh := reweightRun(t, d, d.Service6, d.config6, 30, 120, breakPinning)
	return status, fresh, d
}

func TestDualStackPinningSurvivesReapply(t *testing.T) {
	status, fresh, d := pinningRun6(t, false)
	perLink := map[netip.Addr]int{}
	for i, s := range status {
		perLink[s.Remote.Addr()]++
		if s.Stalled || s.Err != nil || s.Echoes < 50 {
			t.Errorf("IPv6 connection %d (%v via %v) broke: stalled=%v err=%v echoes=%d maxRTT=%v", i, s.Local, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes, s.MaxRTT)
		}
	}
	t.Logf("held IPv6 connections per link: %v", perLink)
	if len(perLink) != 2 {
		t.Errorf("held IPv6 connections used %v, want both links (else a re-weighting moves none)", perLink)
	}
	if fresh.Failed != 0 {
		t.Fatalf("%d new IPv6 connections failed after re-apply: %v", fresh.Failed, fresh.Errors[0])
	}
	checkSplitOf(t, "IPv6 after re-weighting", fresh.PerSource, d.WAN1v6, d.WAN2v6, 4, 1, 0.12)
}

// Without the conntrack restore the same run must break IPv6 connections,
// or the test above proves nothing.
func TestDualStackPinningNeedsRestore(t *testing.T) {
	status, _, _ := pinningRun6(t, true)
	broken := 0
	for _, s := range status {
		if s.Stalled || s.Err != nil {
			broken++
		}
	}
	t.Logf("%d of %d IPv6 connections broke without the restore rules", broken, len(status))
	if broken == 0 {
		t.Error("no IPv6 connection broke with the restore rules removed: the pinning test cannot fail")
	}
}

// foreignState6 adds IPv6 state flowpin does not own beside foreignState's:
// an IPv6 rule with its own table and route.
func foreignState6(t *testing.T, ns string) {
	foreignState(t, ns)
	run(t, ns, "ip", "-6", "route", "add", "fd00:99::/64", "dev", "lan", "table", "300")
	run(t, ns, "ip", "-6", "rule", "add", "pref", "500", "from", "fd00:99::/64", "lookup", "300")
}

// apply, a second apply and down on the dual-stack box, compared with
// snapshots of both families' rules and routes, nftables and sysctls.
func TestDualStackIdempotencyAndDown(t *testing.T) {
	d := newDualWAN6(t)
	foreignState6(t, d.Router)
	// Not the kernel's defaults, so down restoring them is told apart from
	// down writing defaults.
	setSysctl(t, d.Router, "net.ipv6.fib_multipath_hash_policy", "1")
	setSysctl(t, d.Router, "net.ipv6.fib_multipath_hash_fields", "3")
	s0 := state(t, d.Router)

	out := apply(t, d.Router, d.config6(3, 1))
	if kernelWrites(t, out) == 0 {
		t.Fatal("first apply wrote nothing")
	}
	s1 := state(t, d.Router)
	for _, want := range []string{
		"net.ipv6.fib_multipath_hash_policy = 3",
		"net.ipv6.fib_multipath_hash_fields = 55",
		"from 2001:db8:1::2 lookup", "from 2001:db8:2::2 lookup",
		"default via fe80::1 dev wan1", "default via 2001:db8:2::1 dev wan2",
		"nexthop via fe80::1 dev wan1 weight 3",
		// The foreign IPv6 rule and route are left alone.
		"500:\tfrom fd00:99::/64 lookup 300", "fd00:99::/64 dev lan table 300",
	} {
		if !strings.Contains(s1, want) {
			t.Errorf("after apply, state lacks %q:\n%s", want, s1)
		}
	}
	out = apply(t, d.Router, d.config6(3, 1))
	if n := kernelWrites(t, out); n != 0 {
		t.Errorf("second apply made %d kernel writes, want 0: %s", n, out)
	}
	if v := verifyOK(t, d.Router, writeFile(t, "v.yaml", d.config6(3, 1)), "after a dual-stack apply"); !strings.Contains(v, "IPv6") {
		t.Errorf("verify says nothing of IPv6:\n%s", v)
	}
	if diff := cmpLines(s1, state(t, d.Router)); diff != "" {
		t.Errorf("second apply changed the kernel (-first +second):\n%s", diff)
	}

	// Traffic of both families in between, so down also meets conntrack
	// entries and neighbours.
	srv6 := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	srv4 := startEchoServer(t, d.Far, hostPort(d.Service, 0))
	if r := connectN(t, d.LAN, hostPort(d.Service6, srv6.Port()), srv6, 20, dialOpts{}); r.Failed != 0 {
		t.Errorf("IPv6: %d of 20 failed: %v", r.Failed, r.Errors[0])
	}
	if r := connectN(t, d.LAN, hostPort(d.Service, srv4.Port()), srv4, 20, dialOpts{}); r.Failed != 0 {
		t.Errorf("IPv4: %d of 20 failed: %v", r.Failed, r.Errors[0])
	}

	out, err := flowpin(t, d.Router, "down")
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmpLines(s0, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the state before apply (-before +after):\n%s", diff)
	}
	out, err = flowpin(t, d.Router, "down")
	if err != nil || kernelWrites(t, out) != 0 {
		t.Errorf("second down: %v, %s", err, out)
	}
}

// cmpLines diffs two snapshots line by line.
func cmpLines(a, b string) string {
	return cmp.Diff(strings.Split(a, "\n"), strings.Split(b, "\n"))
}

// ndWatch counts, after flowpin's mangle chains, the router's neighbour and
// router discovery and its link-local traffic, and how much of each carries
// a link mark (bits of the default mark mask 0xff00). Global IPv6 to the far
// host is counted too: it must be marked, so the counters are seen to work.
const ndWatch = `table inet ndwatch {
	counter nd {}
	counter nd_marked {}
	counter ll {}
	counter ll_marked {}
	counter global_marked {}
	chain pre {
		type filter hook prerouting priority -140; policy accept;
		jump count
	}
	chain post {
		type filter hook postrouting priority -140; policy accept;
		jump count
	}
	chain count {
		icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } counter name "nd"
		icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } meta mark & 0xff00 != 0 counter name "nd_marked"
		ip6 saddr fe80::/10 counter name "ll"
		ip6 daddr fe80::/10 counter name "ll"
		ip6 saddr fe80::/10 meta mark & 0xff00 != 0 counter name "ll_marked"
		ip6 daddr fe80::/10 meta mark & 0xff00 != 0 counter name "ll_marked"
		ip6 daddr 2001:db8:ff::10 meta mark & 0xff00 != 0 counter name "global_marked"
	}
}
`

// neighState is the NUD state ip(8) shows for addr on dev ("" if none).
func neighState(t *testing.T, ns, dev, addr string) string {
	t.Helper()
	f := strings.Fields(run(t, ns, "ip", "-6", "neigh", "show", "dev", dev, "to", addr))
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// With flowpin applied, neighbour discovery and link-local traffic work on
// every link of the dual-stack box, and none of it is marked.
func TestDualStackLinkLocalAndND(t *testing.T) {
	d := newDualWAN6(t)
	apply(t, d.Router, d.config6(1, 1))
	nft(t, d.Router, ndWatch)

	// Forget every neighbour, so what follows needs fresh resolution.
	for _, c := range []struct{ ns, dev string }{
		{d.Router, "wan1"}, {d.Router, "wan2"}, {d.Router, "lan"},
		{d.ISP1, "cust"}, {d.ISP2, "cust"}, {d.LAN, "eth0"},
	} {
		run(t, c.ns, "ip", "-6", "neigh", "flush", "dev", c.dev)
	}

	linkLocal := func(ns, dev string) string { return linkLocalAddr(t, ns, dev) }
	// Both directions on every link: the router to each ISP's link-local
	// gateway and global address, each ISP to the router's link-local
	// address, and the LAN to the router's.
	for _, p := range []struct{ from, dst string }{
		{d.Router, "fe80::1%wan1"},
		{d.Router, "fe80::1%wan2"},
		{d.Router, "2001:db8:1::1"},
		{d.Router, d.GW2v6},
		{d.ISP1, linkLocal(d.Router, "wan1") + "%cust"},
		{d.ISP2, linkLocal(d.Router, "wan2") + "%cust"},
		{d.LAN, linkLocal(d.Router, "lan") + "%eth0"},
		{d.LAN, d.RouterLAN6},
	} {
		if err := pingTimeout(p.from, "", p.dst, 2*time.Second); err != nil {
			t.Errorf("with flowpin applied: %v", err)
		}
	}
	// Forwarded traffic over both links needs the gateways' neighbours too.
	srv := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	if r := connectN(t, d.LAN, hostPort(d.Service6, srv.Port()), srv, 40, dialOpts{}); r.Failed != 0 || len(r.PerSource) != 2 {
		t.Errorf("LAN -> far over IPv6: %d of 40 failed, far saw %v", r.Failed, r.PerSource)
	}

	resolved := map[string]bool{"REACHABLE": true, "STALE": true, "DELAY": true, "PROBE": true}
	for _, n := range []struct{ ns, dev, addr string }{
		{d.Router, "wan1", "fe80::1"},
		{d.Router, "wan2", "fe80::1"},
		{d.Router, "wan1", "2001:db8:1::1"},
		{d.Router, "wan2", d.GW2v6},
		{d.Router, "lan", d.LANHost6},
		{d.ISP1, "cust", linkLocal(d.Router, "wan1")},
		{d.ISP2, "cust", linkLocal(d.Router, "wan2")},
		{d.LAN, "eth0", d.RouterLAN6},
	} {
		if st := neighState(t, n.ns, n.dev, n.addr); !resolved[st] {
			t.Errorf("neighbour %s on %s (%s): state %q, want resolved\n%s", n.addr, n.dev, n.ns, st, run(t, n.ns, "ip", "-6", "neigh", "show"))
		}
	}

	counter := func(name string) int { return nftCounter(t, d.Router, "inet", "ndwatch", name) }
	nd, ll, global := counter("nd"), counter("ll"), counter("global_marked")
	t.Logf("router saw %d ND packets, %d link-local packets; %d marked packets to the far host", nd, ll, global)
	if nd == 0 || ll == 0 || global == 0 {
		t.Fatalf("watch counters nd=%d ll=%d global_marked=%d: each must have counted something", nd, ll, global)
	}
	if n := counter("nd_marked"); n != 0 {
		t.Errorf("%d neighbour/router discovery packets carried a link mark", n)
	}
	if n := counter("ll_marked"); n != 0 {
		t.Errorf("%d link-local packets carried a link mark", n)
	}
	// Nor pinned: conntrack holds the link-local echoes with no link mark.
	ct := run(t, d.Router, "conntrack", "-L", "-f", "ipv6", "-p", "icmpv6")
	for _, line := range strings.Split(ct, "\n") {
		if strings.Contains(line, "fe80:") && !strings.Contains(line, "mark=0 ") {
			t.Errorf("link-local flow pinned: %s", line)
		}
	}
}

// serverConfig6 is an IPv6-only config (gateway6 only): each interface is a
// link with the switch's link-local address as next hop, no NAT.
func serverConfig6(s *multiHomedServer) string {
	return fmt.Sprintf(`links:
  - name: eth0
    interface: eth0
    gateway6: %s
  - name: eth1
    interface: eth1
    gateway6: %s
`, s.Gateway, s.Gateway)
}

// The multi-homed server in IPv6: both addresses on one /64 answer, each
// from its own interface, behind a switch that drops frames with another
// port's source; the server's own connections work from each address.
func TestMultiHomedServer6(t *testing.T) {
	s := newMultiHomedServer6(t)
	srv := startEchoServer(t, s.Server, "[::]:0")

	// Before: the second address does not work from beyond the gateway
	// (its replies leave by eth0 and the switch drops them).
	drops0 := s.spoofDrops(t, "srv0")
	if r := connectN(t, s.Far, hostPort(s.Eth1Addr, srv.Port()), srv, 3, dialOpts{Timeout: time.Second}); r.OK == 3 {
		t.Fatal("far -> eth1's address worked before apply: the topology does not model the asymmetric-reply failure")
	}
	if s.spoofDrops(t, "srv0") == drops0 {
		t.Error("the switch dropped nothing on srv0: the failure before apply was not the reply by the wrong port")
	}

	out := apply(t, s.Server, serverConfig6(s))
	t.Log(strings.TrimSpace(out))
	if !strings.Contains(out, "applied: IPv6 2 of 2 links in the multipath route") {
		t.Errorf("apply did not put both interfaces in the IPv6 multipath route: %s", out)
	}
	d0, d1 := s.spoofDrops(t, "srv0"), s.spoofDrops(t, "srv1")

	for _, from := range []string{s.Neighbor, s.Far} {
		for _, dst := range []string{s.Eth0Addr, s.Eth1Addr} {
			if err := pingTimeout(from, "", dst, 2*time.Second); err != nil {
				t.Errorf("ping %s -> %s: %v", from, dst, err)
			}
			r := connectN(t, from, hostPort(dst, srv.Port()), srv, 20, dialOpts{})
			if r.Failed != 0 {
				t.Errorf("TCP %s -> %s: %d of 20 failed: %v", from, dst, r.Failed, r.Errors[0])
			}
		}
	}

	// The server's own outbound connections, from an unbound socket and
	// from each address, to the far host and to the neighbour.
	farSrv := startEchoServer(t, s.Far, hostPort(s.Service, 0))
	nbrSrv := startEchoServer(t, s.Neighbor, hostPort(s.NeighborAddr, 0))
	for _, src := range []string{"", s.Eth0Addr, s.Eth1Addr} {
		for _, tgt := range []struct {
			srv  *echoServer
			addr string
		}{{farSrv, s.Service}, {nbrSrv, s.NeighborAddr}} {
			tgt.srv.Reset()
			r := connectN(t, s.Server, hostPort(tgt.addr, tgt.srv.Port()), tgt.srv, 20, dialOpts{Src: src})
			if r.Failed != 0 {
				t.Errorf("server (src %q) -> %s: %d of 20 failed: %v", src, tgt.addr, r.Failed, r.Errors[0])
			}
			got := tgt.srv.Sources()
			switch {
			case src == "" && tgt.addr == s.Service && len(got) != 2:
				// Unbound flows to beyond the gateway spread over both
				// interfaces (each leaving with its own address).
				t.Errorf("far saw the server's unbound flows from %v, want both addresses", got)
			case src != "" && got[netip.MustParseAddr(src)] != r.OK:
				t.Errorf("server (src %s) -> %s: seen from %v", src, tgt.addr, got)
			}
		}
	}
	if n0, n1 := s.spoofDrops(t, "srv0")-d0, s.spoofDrops(t, "srv1")-d1; n0+n1 != 0 {
		t.Errorf("switch dropped %d/%d packets with another port's source after apply", n0, n1)
	}
}

// bigEcho sends n bytes (after a token line) from ns to target and reads
// them back: segments of the LAN's full MTU, which a smaller WAN MTU makes
// the router answer with "packet too big" / "fragmentation needed".
func bigEcho(ns, target string, n int, timeout time.Duration) error {
	c, err := dialIn(ns, target, nil, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := randToken() + "\n" + strings.Repeat("x", n)
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read echo (%d of %d bytes back): %w", len(got), len(msg), err)
	}
	if err := <-werr; err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo of %d bytes came back as %d", len(msg), len(got))
	}
	return nil
}

// Path MTU discovery through the box: with 1280-byte WAN links behind a
// 1500-byte LAN, the router's own "packet too big" (IPv6) and
// "fragmentation needed" (IPv4) must reach the LAN host. They belong to the
// pinned flow in conntrack; with the flow's mark they would be routed by
// the link's table, out of the WAN, and every large transfer would hang.
func TestDualStackPathMTU(t *testing.T) {
	d := newDualWAN6(t)
	for _, c := range []struct{ ns, dev string }{{d.Router, "wan1"}, {d.Router, "wan2"}, {d.ISP1, "cust"}, {d.ISP2, "cust"}} {
		run(t, c.ns, "ip", "link", "set", "dev", c.dev, "mtu", "1280")
	}
	apply(t, d.Router, d.config6(1, 1))
	srv6 := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	srv4 := startEchoServer(t, d.Far, hostPort(d.Service, 0))
	for _, target := range []string{hostPort(d.Service6, srv6.Port()), hostPort(d.Service, srv4.Port())} {
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = bigEcho(d.LAN, target, 20000, 3*time.Second) }()
		}
		wg.Wait()
		failed := 0
		for _, err := range errs {
			if err != nil {
				failed++
				t.Logf("LAN -> %s: %v", target, err)
			}
		}
		if failed != 0 {
			t.Errorf("LAN -> %s: %d of %d transfers of 20 kB hung (path MTU discovery broken)", target, failed, len(errs))
		}
	}
	if out := run(t, d.LAN, "ip", "-6", "route", "show", "cache"); !strings.Contains(out, "mtu 1280") {
		t.Errorf("the LAN host learnt no IPv6 path MTU:\n%s", out)
	}
}
