package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Two modems on wan0, handled roughly: apply twice (the second writes
// nothing), modem2 replaced by a box with another MAC (a re-apply follows
// it: its port forwards are pinned to it again), modem2 removed from the
// config (its flows go, modem1's stay, new flows take modem1 only), wan0
// down under an apply (both links out, nothing half-applied) and back, and
// down exact at the end.
func TestTwoModemsHostile(t *testing.T) {
	d := newTwoModems(t)
	for _, gw := range []string{d.GW1, d.GW2} {
		if err := ping(d.Router, "192.168.1.2", gw); err != nil {
			t.Fatalf("ping %s: %v", gw, err)
		}
	}
	s0 := state(t, d.Router)
	both := d.configModems(1, 1, "")
	apply(t, d.Router, both)
	s1 := state(t, d.Router)
	if n := kernelWrites(t, apply(t, d.Router, both)); n != 0 {
		t.Errorf("a second apply of the same config wrote %d times, want 0", n)
	}
	if diff := cmp.Diff(s1, state(t, d.Router)); diff != "" {
		t.Errorf("a second apply changed the kernel (-first +second):\n%s", diff)
	}

	// modem2 replaced: same address, another MAC. The router learns it
	// (its old entry flushed, as a gratuitous ARP would update it); a
	// re-apply puts it in by_mac_wan0, and a connection modem2 forwards
	// is answered through modem2 again.
	run(t, d.ISP2, "ip", "link", "set", "dev", "lan", "address", "02:00:00:00:02:fe")
	run(t, d.Router, "ip", "neigh", "flush", "dev", "wan0", "to", d.GW2)
	if err := ping(d.Router, "192.168.1.2", d.GW2); err != nil {
		t.Fatalf("ping %s: %v", d.GW2, err)
	}
	apply(t, d.Router, both)
	if table := run(t, d.Router, "nft", "list", "map", "inet", "flowpin", "by_mac_wan0"); !strings.Contains(table, "02:00:00:00:02:fe : goto from_modem2") {
		t.Errorf("by_mac_wan0 does not follow modem2's new MAC:\n%s", table)
	}
	fwd := startEchoServer(t, d.Router, "0.0.0.0:8022")
	if r := connectN(t, d.Far, d.WAN2+":8022", fwd, 20, dialOpts{Timeout: 2 * time.Second}); r.Failed != 0 {
		t.Errorf("%d of 20 connections forwarded by the replaced modem2 failed, first: %v", r.Failed, r.Errors[0])
	}

	// modem2 leaves the config while flows run on both.
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	ll := startLongLived(t, d.LAN, target, srv, 16, dialOpts{})
	time.Sleep(500 * time.Millisecond)
	one := strings.SplitAfter(both, "nat: true\n")[0]
	apply(t, d.Router, one)
	time.Sleep(stallAfter + 500*time.Millisecond)
	held := ll.stop()
	on1, broken1, on2 := 0, 0, 0
	for _, s := range held {
		switch s.Remote.Addr().String() {
		case d.WAN1:
			on1++
			if s.Stalled || s.Err != nil {
				broken1++
			}
		case d.WAN2:
			on2++
		}
	}
	t.Logf("modem2 removed: %d held flows on modem1 (%d broken), %d on modem2 (gone with it)", on1, broken1, on2)
	if on1 == 0 || on2 == 0 || broken1 != 0 {
		t.Errorf("modem2 removed: %d held flows on modem1, %d of them broken, %d on modem2; want some on each, none on modem1 broken", on1, broken1, on2)
	}
	table := run(t, d.Router, "nft", "list", "table", "inet", "flowpin")
	if strings.Contains(table, "modem2") || strings.Contains(table, "by_nexthop_wan0") || !strings.Contains(table, `"wan0" : jump save_modem1`) {
		t.Errorf("with modem1 alone wan0 is an ordinary link, and nothing of modem2 is left:\n%s", table)
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 30, dialOpts{}); r.Failed != 0 || r.PerSource[addr(d.WAN1)] != 30 {
		t.Errorf("modem1 alone: %v, %d failed; want all 30 by modem1", r.PerSource, r.Failed)
	}

	// Every modem down: wan0 loses its carrier under an apply of both.
	run(t, d.Router, "ip", "link", "set", "dev", "wan0", "down")
	out, err := flowpin(t, d.Router, "apply", "-c", writeFile(t, "both.yaml", both))
	t.Logf("apply with wan0 down: %v\n%s", err, out)
	if err != nil || !strings.Contains(out, "modem1") || !strings.Contains(out, "modem2") {
		t.Errorf("apply with wan0 down: %v, want both modems left out with a warning:\n%s", err, out)
	}
	linkUp(t, d.Router, "wan0")
	run(t, d.Router, "ip", "route", "replace", "default", "via", d.GW1, "dev", "wan0")
	apply(t, d.Router, both)
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 40, dialOpts{}); r.Failed != 0 || r.PerSource[addr(d.WAN1)] == 0 || r.PerSource[addr(d.WAN2)] == 0 {
		t.Errorf("wan0 back: %v, %d failed; want both modems, none failed", r.PerSource, r.Failed)
	}

	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the state before apply (-before +after):\n%s", diff)
	}
}
