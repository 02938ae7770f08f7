package integration

// Self-tests of the harness: they need no flowpin binary and pin down the
// "before flowpin" baselines the real tests rely on.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"flowpin/lb/nslock"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestHarnessDualWANBaseline(t *testing.T) {
	t.Parallel()
	d := newDualWAN(t)

	if err := ping(d.LAN, "", d.RouterLAN); err != nil {
		t.Errorf("lan -> router: %v", err)
	}
	if err := ping(d.Far, "", d.WAN1); err != nil {
		t.Errorf("far -> router wan1: %v", err)
	}

	srv := startEchoServer(t, d.Router, "0.0.0.0:0")
	port := srv.Port()

	res := connectN(t, d.Far, fmt.Sprintf("%s:%d", d.WAN1, port), srv, 5, dialOpts{})
	if res.OK != 5 {
		t.Errorf("far -> %s tcp: %d/5 ok: %v", d.WAN1, res.OK, res.Errors)
	}
	if got := res.PerSource[addr(d.Service)]; got != 5 {
		t.Errorf("far's connections should come from %s, per source: %v", d.Service, res.PerSource)
	}

	// The baseline the real test needs: a connection to WAN2 gets in via
	// isp2, but the reply follows main's default route out of wan1 with
	// source 198.51.100.2 and ISP1's BCP38 filter drops it.
	before := d.bcp38Drops(t, d.ISP1)
	if err := ping(d.Far, "", d.WAN2); err == nil {
		t.Errorf("far -> router wan2 ping: want failure before flowpin, got a reply")
	}
	srv.Reset()
	res = connectN(t, d.Far, fmt.Sprintf("%s:%d", d.WAN2, port), srv, 3, dialOpts{Timeout: time.Second})
	if res.OK != 0 {
		t.Errorf("far -> %s tcp: %d/3 succeeded, want all to fail before flowpin", d.WAN2, res.OK)
	}
	if got := srv.Sources()[addr(d.Service)]; got != 0 {
		t.Errorf("router accepted %d connections on wan2 (handshake completed?)", got)
	}
	if drops := d.bcp38Drops(t, d.ISP1) - before; drops < 4 {
		t.Errorf("isp1 BCP38 dropped %d packets, want >= 4 (1 ping reply + SYN-ACKs)", drops)
	}

	// LAN -> far without NAT: ISP1 sees source 10.77.0.2 and drops it.
	before = d.bcp38Drops(t, d.ISP1)
	if err := ping(d.LAN, "", d.Service); err == nil {
		t.Errorf("lan -> far without NAT: want BCP38 drop, got a reply")
	}
	if d.bcp38Drops(t, d.ISP1) == before {
		t.Errorf("lan -> far without NAT: isp1 did not count a drop")
	}
	t.Logf("router snapshot before flowpin:\n%s", snapshot(t, d.Router))
}

// TestHarnessBCP38Drops proves each ISP's filter is what drops a spoofed
// source: the same probe gets through once the filter is removed (the reply
// comes back over the other ISP, which routes the prefix via far).
func TestHarnessBCP38Drops(t *testing.T) {
	t.Parallel()
	d := newDualWAN(t)
	// Per case, both router addresses leave toward the far service through
	// the ISP under test (tables 201/202, rules 500/501).
	addRoute(t, d.Router, d.Service+"/32", "via", d.GW1, "dev", "wan1", "table", "201")
	addRoute(t, d.Router, d.Service+"/32", "via", d.GW2, "dev", "wan2", "table", "202")

	for _, c := range []struct {
		isp, table, own, spoof string
	}{
		{d.ISP1, "201", d.WAN1, d.WAN2},
		{d.ISP2, "202", d.WAN2, d.WAN1},
	} {
		run(t, d.Router, "ip", "rule", "add", "from", d.WAN1, "to", d.Service, "lookup", c.table, "pref", "500")
		run(t, d.Router, "ip", "rule", "add", "from", d.WAN2, "to", d.Service, "lookup", c.table, "pref", "501")
		if err := ping(d.Router, c.own, d.Service); err != nil {
			t.Errorf("%s: own source %s: %v", c.isp, c.own, err)
		}
		before := nftCounter(t, c.isp, "netdev", "bcp38", "spoofed")
		if err := ping(d.Router, c.spoof, d.Service); err == nil {
			t.Errorf("%s: spoofed source %s got through", c.isp, c.spoof)
		}
		if nftCounter(t, c.isp, "netdev", "bcp38", "spoofed") == before {
			t.Errorf("%s: spoofed packet not counted by the filter", c.isp)
		}
		run(t, c.isp, "nft", "delete", "table", "netdev", "bcp38")
		if err := ping(d.Router, c.spoof, d.Service); err != nil {
			t.Errorf("%s: without the filter the spoofed probe should get through (is a route missing?): %v", c.isp, err)
		}
		nft(t, c.isp, bcp38Ruleset(c.own))
		run(t, d.Router, "ip", "rule", "del", "pref", "500")
		run(t, d.Router, "ip", "rule", "del", "pref", "501")
	}
}

func TestHarnessServerBaseline(t *testing.T) {
	t.Parallel()
	s := newMultiHomedServer(t)

	if err := ping(s.Neighbor, "", s.Eth0Addr); err != nil {
		t.Errorf("neighbor -> eth0 %s: %v", s.Eth0Addr, err)
	}
	if err := ping(s.Server, "", s.Service); err != nil {
		t.Errorf("server -> far %s: %v", s.Service, err)
	}
	srv := startEchoServer(t, s.Server, "0.0.0.0:0")
	for _, from := range []string{s.Neighbor, s.Far} {
		res := connectN(t, from, fmt.Sprintf("%s:%d", s.Eth0Addr, srv.Port()), srv, 5, dialOpts{})
		if res.OK != 5 {
			t.Errorf("%s -> eth0 tcp: %d/5 ok: %v", from, res.OK, res.Errors)
		}
	}

	// Before flowpin, the second address does not answer. Whichever interface
	// the request arrives on (both answer ARP for it), the reply follows
	// the first subnet route / the default route out of eth0 with source
	// 10.88.0.11, and the switch drops it on srv0.
	before := s.spoofDrops(t, "srv0")
	if err := ping(s.Neighbor, "", s.Eth1Addr); err == nil {
		t.Errorf("neighbor -> eth1 %s ping: want failure before flowpin, got a reply", s.Eth1Addr)
	}
	for _, from := range []string{s.Neighbor, s.Far} {
		res := connectN(t, from, fmt.Sprintf("%s:%d", s.Eth1Addr, srv.Port()), srv, 3, dialOpts{Timeout: time.Second})
		if res.OK != 0 {
			t.Errorf("%s -> eth1 tcp: %d/3 succeeded, want failure before flowpin", from, res.OK)
		}
	}
	if s.spoofDrops(t, "srv0") == before {
		t.Errorf("srv0 did not drop anything: the failure is not the asymmetric reply this topology models")
	}
	t.Logf("neighbor's ARP entry for %s: %s", s.Eth1Addr,
		strings.TrimSpace(run(t, s.Neighbor, "ip", "neigh", "show", s.Eth1Addr)))
	t.Logf("server: %s", strings.TrimSpace(run(t, s.Server, "ip", "-br", "link")))
	t.Logf("drops srv0=%d srv1=%d", s.spoofDrops(t, "srv0"), s.spoofDrops(t, "srv1"))
}

func TestHarnessServerPortSecurity(t *testing.T) {
	t.Parallel()
	s := newMultiHomedServer(t)
	// Out of eth1 with eth1's own source passes; with eth0's it is dropped.
	run(t, s.Server, "ip", "route", "add", s.NeighborAddr+"/32", "dev", "eth1")
	for _, c := range []struct {
		port, own, spoof string
	}{
		{"srv1", s.Eth1Addr, s.Eth0Addr},
	} {
		if err := ping(s.Server, c.own, s.NeighborAddr); err != nil {
			t.Errorf("%s: own source: %v", c.port, err)
		}
		before := s.spoofDrops(t, c.port)
		if err := ping(s.Server, c.spoof, s.NeighborAddr); err == nil {
			t.Errorf("%s: spoofed source %s got through", c.port, c.spoof)
		}
		if s.spoofDrops(t, c.port) == before {
			t.Errorf("%s: spoofed packet not counted", c.port)
		}
	}
	run(t, s.Server, "ip", "route", "del", s.NeighborAddr+"/32", "dev", "eth1")

	// Out of eth0 (main's subnet route) with 10.88.0.11 is dropped on srv0,
	// and gets through once the switch's filter is gone.
	before := s.spoofDrops(t, "srv0")
	if err := ping(s.Server, s.Eth1Addr, s.NeighborAddr); err == nil {
		t.Errorf("srv0: spoofed source %s got through", s.Eth1Addr)
	}
	if s.spoofDrops(t, "srv0") == before {
		t.Errorf("srv0: spoofed packet not counted")
	}
	run(t, s.Switch, "nft", "delete", "table", "netdev", "portsec")
	if err := ping(s.Server, s.Eth1Addr, s.NeighborAddr); err != nil {
		t.Errorf("without port security the probe should get through: %v", err)
	}
}

func TestHarnessTraffic(t *testing.T) {
	t.Parallel()
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Router, d.RouterLAN+":0")
	target := fmt.Sprintf("%s:%d", d.RouterLAN, srv.Port())

	res := connectN(t, d.LAN, target, srv, 40, dialOpts{})
	if res.OK != 40 || res.PerSource[addr(d.LANHost)] != 40 {
		t.Fatalf("40 connections: ok=%d per source %v errors %v", res.OK, res.PerSource, res.Errors)
	}

	// Fixed source ports, twice in a row: the server closes first, so the
	// client can reuse the 4-tuple at once.
	ports := []int{40001, 40002, 40003}
	for round := 0; round < 2; round++ {
		res = connectN(t, d.LAN, target, srv, 3, dialOpts{SrcPorts: ports})
		if res.OK != 3 {
			t.Fatalf("fixed ports round %d: %v", round, res.Errors)
		}
		for i, ra := range res.Remote {
			if int(ra.Port()) != ports[i] || int(res.Local[i].Port()) != ports[i] {
				t.Errorf("round %d conn %d: local %v remote %v, want port %d", round, i, res.Local[i], ra, ports[i])
			}
		}
	}

	// Long-lived connections: healthy ones never stall ...
	ll := startLongLived(t, d.LAN, target, srv, 4, dialOpts{})
	time.Sleep(600 * time.Millisecond)
	for i, st := range ll.stop() {
		if st.Stalled || st.Err != nil || st.Echoes < 5 || st.Remote.Addr() != addr(d.LANHost) {
			t.Errorf("healthy conn %d: %+v", i, st)
		}
	}

	// ... and a blackhole longer than 2s is reported as a stall, while the
	// connection itself survives it (TCP retransmits).
	ll = startLongLived(t, d.LAN, target, srv, 2, dialOpts{})
	time.Sleep(200 * time.Millisecond)
	nft(t, d.Router, fmt.Sprintf("table inet blackhole {\n chain in {\n type filter hook input priority 0; tcp dport %d drop\n }\n}\n", srv.Port()))
	time.Sleep(2500 * time.Millisecond)
	run(t, d.Router, "nft", "delete", "table", "inet", "blackhole")
	time.Sleep(1500 * time.Millisecond)
	for i, st := range ll.stop() {
		if !st.Stalled || st.Err != nil || st.MaxRTT < stallAfter {
			t.Errorf("blackholed conn %d: want stalled without error, got %+v", i, st)
		}
	}

	if err := ping(d.LAN, "", "10.77.0.99"); err == nil {
		t.Errorf("ping of an absent address succeeded")
	}
}

func TestHarnessSnapshot(t *testing.T) {
	t.Parallel()
	d := newDualWAN(t)
	a, b := snapshot(t, d.Router), snapshot(t, d.Router)
	if a != b {
		t.Fatalf("two snapshots differ:\n%s\n---\n%s", a, b)
	}
	for _, want := range []string{
		"## ip rule show\n0:\tfrom all lookup local",
		"default via 192.0.2.1 dev wan1",
		"net.ipv4.fib_multipath_hash_policy = 0",
		"net.ipv4.conf.wan2.rp_filter = 0",
		"net.ipv4.conf.lan.arp_ignore = 0",
		"net.ipv4.ip_forward = 1",
		"## ip -6 rule show\n0:\tfrom all lookup local",
		"net.ipv6.fib_multipath_hash_policy = 0",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("snapshot lacks %q:\n%s", want, a)
		}
	}
	setSysctl(t, d.Router, "net.ipv4.conf.wan2.arp_announce", "2")
	if c := snapshot(t, d.Router); c == a {
		t.Errorf("snapshot did not see an arp_announce change")
	}
	setSysctl(t, d.Router, "net.ipv4.conf.wan2.arp_announce", "0")
	run(t, d.Router, "ip", "rule", "add", "fwmark", "0x100/0xff00", "lookup", "101", "pref", "1000")
	if c := snapshot(t, d.Router); c == a || !strings.Contains(c, "1000:\tfrom all fwmark 0x100/0xff00 lookup 101") {
		t.Errorf("snapshot did not see the new rule:\n%s", c)
	}
	run(t, d.Router, "ip", "rule", "del", "pref", "1000")
	if c := snapshot(t, d.Router); c != a {
		t.Errorf("snapshot after undo differs:\n%s\n---\n%s", a, c)
	}
}

// With IPv6 on, a snapshot is still stable (nothing appears late after the
// topology is up) and sees IPv6 rules and routes.
func TestHarnessSnapshot6(t *testing.T) {
	t.Parallel()
	d := newDualWAN6(t)
	a := snapshot(t, d.Router)
	time.Sleep(300 * time.Millisecond)
	if b := snapshot(t, d.Router); a != b {
		t.Fatalf("two snapshots differ:\n%s\n---\n%s", a, b)
	}
	for _, want := range []string{"default via fe80::1 dev wan1", "2001:db8:2::/64 dev wan2", "net.ipv6.conf.all.forwarding = 1"} {
		if !strings.Contains(a, want) {
			t.Errorf("snapshot lacks %q:\n%s", want, a)
		}
	}
	run(t, d.Router, "ip", "-6", "rule", "add", "fwmark", "0x100/0xff00", "lookup", "101", "pref", "1000")
	if c := snapshot(t, d.Router); !strings.Contains(c, "1000:\tfrom all fwmark 0x100/0xff00 lookup 101") {
		t.Errorf("snapshot did not see the new IPv6 rule:\n%s", c)
	}
	run(t, d.Router, "ip", "-6", "rule", "del", "pref", "1000")
	run(t, d.Router, "ip", "-6", "route", "add", "fd00:98::/64", "dev", "lan", "table", "300")
	if c := snapshot(t, d.Router); !strings.Contains(c, "fd00:98::/64 dev lan table 300") {
		t.Errorf("snapshot did not see the new IPv6 route:\n%s", c)
	}
}

// TestHarnessCleanup checks that a topology's namespaces are gone once its
// test has finished, whether it passed or not.
func TestHarnessCleanup(t *testing.T) {
	requireRoot(t)
	var names []string
	t.Run("dualwan", func(t *testing.T) {
		d := newDualWAN(t)
		names = append(names, d.LAN, d.Router, d.ISP1, d.ISP2, d.Far)
	})
	t.Run("server", func(t *testing.T) {
		s := newMultiHomedServer(t)
		names = append(names, s.Switch, s.Server, s.Neighbor, s.Far)
	})
	out, err := hostIP("netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(out, n) {
			t.Errorf("namespace %s still exists after its test", n)
		}
		if _, ok := owned.Load(n); ok {
			t.Errorf("namespace %s still registered", n)
		}
	}
	if _, err := tryRun(names[0], "true"); err == nil {
		t.Errorf("run in a deleted namespace was not refused")
	}
}

// TestHarnessEchoToken: the first echo of a long-lived connection fails on
// a wrong answer and on a closed connection, not only on a write error.
func TestHarnessEchoToken(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer func(net.Conn)
		ok     bool
	}{
		{"echo", func(c net.Conn) { _, _ = io.Copy(c, c) }, true},
		{"wrong answer", func(c net.Conn) {
			_, _ = bufio.NewReader(c).ReadString('\n')
			_, _ = io.WriteString(c, "other\n")
		}, false},
		{"closed before answering", func(c net.Conn) {
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go c.answer(server)
			err := echoToken(client, bufio.NewReader(client), "tok")
			if (err == nil) != c.ok {
				t.Errorf("echoToken: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// A test's namespace takes flowpin's files in the host's /run/flowpin with
// it (a daemon killed with the namespace leaves its socket and locks), and
// only its own: another namespace's stay.
func TestHarnessRemovesFlowpinFiles(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	mine, other := l.addNS("a"), l.addNS("b")
	if err := os.MkdirAll(nslock.DefaultDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, ns := range []string{mine, other} {
		stem, err := nsStem(ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, ext := range []string{".sock", ".daemon", ".operator.json"} {
			f := filepath.Join(nslock.DefaultDir, stem+ext)
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
			t.Cleanup(func() { _ = os.Remove(f) })
		}
	}
	removeFlowpinFiles(mine)
	for i, f := range files {
		_, err := os.Stat(f)
		if gone := errors.Is(err, os.ErrNotExist); gone != (i < 3) {
			t.Errorf("%s: gone %v, want %v", f, gone, i < 3)
		}
	}
}
