package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
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
