package integration

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// triWAN is a NAT router with three uplinks, the shape of dualWAN:
//
//	lan --- router ==wan0== isp0 ---core--- far (203.0.113.10 on lo)
//	               ==wan1== isp1 ---core---/
//	               ==wan2== isp2 ---core---/
//
// Router wan<i> is 100.100.<i>.2/24, its gateway 100.100.<i>.1. Each ISP
// drops packets on its customer port whose source is not the customer's
// address (BCP38), so a flow sent out of the wrong link is lost.
type triWAN struct {
	LAN, Router, Far string
	ISP              [3]string
	Service          string
}

func (w *triWAN) wanAddr(i int) string { return fmt.Sprintf("100.100.%d.2", i) }

func newTriWAN(t testing.TB) *triWAN {
	t.Helper()
	start := time.Now()
	l := newLab(t)
	w := &triWAN{LAN: l.addNS("lan"), Router: l.addNS("router"), Far: l.addNS("far"), Service: "203.0.113.10"}
	veth(t, w.LAN, "eth0", w.Router, "lan")
	addAddr(t, w.LAN, "eth0", "10.77.0.2/24")
	addRoute(t, w.LAN, "default", "via", "10.77.0.1")
	addAddr(t, w.Router, "lan", "10.77.0.1/24")
	setSysctl(t, w.Router, "net.ipv4.ip_forward", "1")
	addAddr(t, w.Far, "lo", w.Service+"/32")
	setSysctl(t, w.Far, "net.ipv4.ip_forward", "1")
	for i := range w.ISP {
		isp := l.addNS(fmt.Sprintf("isp%d", i))
		w.ISP[i] = isp
		wan := fmt.Sprintf("wan%d", i)
		veth(t, w.Router, wan, isp, "cust")
		veth(t, isp, "core", w.Far, fmt.Sprintf("isp%d", i))
		addAddr(t, w.Router, wan, w.wanAddr(i)+"/24")
		addAddr(t, isp, "cust", fmt.Sprintf("100.100.%d.1/24", i))
		addAddr(t, isp, "core", fmt.Sprintf("100.64.%d.1/30", i))
		setSysctl(t, isp, "net.ipv4.ip_forward", "1")
		addRoute(t, isp, "203.0.113.0/24", "via", fmt.Sprintf("100.64.%d.2", i))
		nft(t, isp, bcp38Ruleset(w.wanAddr(i)))
		addAddr(t, w.Far, fmt.Sprintf("isp%d", i), fmt.Sprintf("100.64.%d.2/30", i))
		addRoute(t, w.Far, fmt.Sprintf("100.100.%d.0/24", i), "via", fmt.Sprintf("100.64.%d.1", i), "src", w.Service)
	}
	// What the box had before flowpin: one default route, via isp0.
	addRoute(t, w.Router, "default", "via", "100.100.0.1", "dev", "wan0")
	t.Logf("tri-WAN topology (%s-*) up in %v", w.Router[:len(w.Router)-len("-router")], time.Since(start).Round(time.Millisecond))
	return w
}

// config renders a flowpin config with the links named, in that order.
func (w *triWAN) config(links ...int) string {
	var b strings.Builder
	b.WriteString("links:\n")
	for _, i := range links {
		fmt.Fprintf(&b, "  - {name: isp%d, interface: wan%d, gateway: 100.100.%d.1, weight: 1, nat: true}\n", i, i, i)
	}
	return b.String()
}

var flowEntriesRE = regexp.MustCompile(`(\d+) flow entries have been shown`)

// ctCount counts the router's conntrack entries with ct mark & mask == mark.
func ctCount(t testing.TB, ns string, mark, mask uint32) int {
	t.Helper()
	out := run(t, ns, "conntrack", "-L", "--mark", fmt.Sprintf("%#x/%#x", mark, mask))
	m := flowEntriesRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("conntrack -L: no count in %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Removing the first of three links: the other two keep their marks and
// tables, so none of their established connections breaks, and the
// removed link's flows are deleted from conntrack at once.
func TestRemoveFirstLinkKeepsOthersFlows(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root, network namespaces and real traffic")
	}
	w := newTriWAN(t)
	srv := startEchoServer(t, w.Far, w.Service+":0")
	target := fmt.Sprintf("%s:%d", w.Service, srv.Port())
	apply(t, w.Router, w.config(0, 1, 2))

	ll := startLongLived(t, w.LAN, target, srv, 45, dialOpts{})
	time.Sleep(300 * time.Millisecond)
	linkOf := map[netip.Addr]int{}
	for i := range 3 {
		linkOf[netip.MustParseAddr(w.wanAddr(i))] = i
	}
	var perLink [3]int
	for _, s := range ll.status {
		perLink[linkOf[s.Remote.Addr()]]++
	}
	t.Logf("held connections per link: isp0 %d, isp1 %d, isp2 %d", perLink[0], perLink[1], perLink[2])
	if perLink[0] == 0 || perLink[1] == 0 || perLink[2] == 0 {
		t.Fatalf("a link holds no connection: %v", perLink)
	}
	if n := ctCount(t, w.Router, 0x100, 0xff00); n < perLink[0] {
		t.Fatalf("%d flows with isp0's mark 0x100, want at least its %d connections", n, perLink[0])
	}

	out, err := flowpin(t, w.Router, "apply", "-v", "-c", writeFile(t, "f.yaml", w.config(1, 2)))
	if err != nil {
		t.Fatalf("apply without isp0: %v\n%s", err, out)
	}
	t.Logf("apply without isp0:\n%s", out)
	if n := ctCount(t, w.Router, 0x100, 0xff00); n != 0 {
		t.Errorf("%d flows still carry isp0's mark 0x100 after it left the config", n)
	}
	// Long enough for a misrouted connection to count as stalled.
	time.Sleep(stallAfter + time.Second)
	status := ll.stop()
	broken := [3]int{}
	for i, s := range status {
		link := linkOf[s.Remote.Addr()]
		if s.Stalled || s.Err != nil {
			broken[link]++
			if link != 0 {
				t.Errorf("connection %d on isp%d broke: stalled=%v err=%v echoes=%d", i, link, s.Stalled, s.Err, s.Echoes)
			}
		}
	}
	t.Logf("broken connections: isp0 %d of %d (its link is gone), isp1 %d of %d, isp2 %d of %d",
		broken[0], perLink[0], broken[1], perLink[1], broken[2], perLink[2])

	// New connections go out by isp1 and isp2 only, and arrive.
	srv.Reset()
	fresh := connectN(t, w.LAN, target, srv, 40, dialOpts{})
	if fresh.Failed != 0 {
		t.Errorf("%d of 40 new connections failed: %v", fresh.Failed, fresh.Errors[0])
	}
	if n := fresh.PerSource[netip.MustParseAddr(w.wanAddr(0))]; n != 0 {
		t.Errorf("%d new connections left by the removed isp0", n)
	}

	// The marks stay with the names across a restart: a second apply
	// changes nothing, and status reads the same marks.
	out = apply(t, w.Router, w.config(1, 2))
	if n := kernelWrites(t, out); n != 0 {
		t.Errorf("re-apply made %d writes", n)
	}
	checkMarks(t, w, w.config(1, 2), map[string]uint32{"isp1": 0x200, "isp2": 0x300})

	// isp0 comes back, first in the list: the others stay where they are.
	apply(t, w.Router, w.config(0, 1, 2))
	checkMarks(t, w, w.config(0, 1, 2), map[string]uint32{"isp0": 0x100, "isp1": 0x200, "isp2": 0x300})
	if n := kernelWrites(t, apply(t, w.Router, w.config(0, 1, 2))); n != 0 {
		t.Errorf("re-apply made %d writes", n)
	}
}

// checkMarks checks the fwmark rules (mark 0xN00 -> table 100+N here),
// and that status and verify, which read the config, see the same marks.
func checkMarks(t *testing.T, w *triWAN, cfg string, want map[string]uint32) {
	t.Helper()
	rules := run(t, w.Router, "ip", "rule")
	for _, m := range want {
		if r := fmt.Sprintf("fwmark %#x/0xff00 lookup %d", m, 100+m>>8); !strings.Contains(rules, r) {
			t.Errorf("ip rule has no %q:\n%s", r, rules)
		}
	}
	path := writeFile(t, "f.yaml", cfg)
	for _, l := range readStatus(t, w.Router, path).Links {
		if l.Mark != want[l.Name] {
			t.Errorf("status: %s has mark %#x, want %#x", l.Name, l.Mark, want[l.Name])
		}
	}
	if out, err := flowpin(t, w.Router, "verify", "-c", path); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
