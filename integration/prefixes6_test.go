package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// prefixesWAN is the dual-stack dual-WAN box where each ISP also routes a
// /56 to the site (issue 23):
//
//	lan  2001:db8:1:100::2, 2001:db8:2:100::2 (+ fd00:77::2) --- router lan
//	lan2 2001:db8:1:101::7, 2001:db8:2:101::7 --- router lan2
//	router ==wan1== isp1 (routes 2001:db8:1:100::/56 to the router)
//	       ==wan2== isp2 (routes 2001:db8:2:100::/56 to the router)
//
// Each ISP's BCP38 drops IPv6 from the router whose source is not its own
// customer /64 or /56, and far routes each /56 back by its own ISP. The
// ISPs route each other's /56 via far, so a flow sent by the wrong ISP
// would get its replies: a loss is the filter's doing.
type prefixesWAN struct {
	*dualWAN
	LAN2 string // second LAN host's namespace
}

const (
	host1a, host1b = "2001:db8:1:100::2", "2001:db8:2:100::2" // lan, from each /56
	host2a, host2b = "2001:db8:1:101::7", "2001:db8:2:101::7" // lan2
	prefix1        = "2001:db8:1:100::/56"
	prefix2        = "2001:db8:2:100::/56"
)

func newPrefixesWAN(t testing.TB) *prefixesWAN {
	t.Helper()
	d := buildDualWAN(t, true, false)
	l := &lab{t: t, id: strings.TrimSuffix(strings.TrimPrefix(d.Router, "fp"), "-router"), ipv6: true}
	p := &prefixesWAN{dualWAN: d, LAN2: l.addNS("lan2")}
	veth(t, p.LAN2, "eth0", d.Router, "lan2")
	addAddr6(t, d.Router, "lan", "2001:db8:1:100::1/64")
	addAddr6(t, d.Router, "lan", "2001:db8:2:100::1/64")
	addAddr6(t, d.Router, "lan2", "2001:db8:1:101::1/64")
	addAddr6(t, d.Router, "lan2", "2001:db8:2:101::1/64")
	addAddr6(t, d.LAN, "eth0", host1a+"/64")
	addAddr6(t, d.LAN, "eth0", host1b+"/64")
	addAddr6(t, p.LAN2, "eth0", host2a+"/64")
	addAddr6(t, p.LAN2, "eth0", host2b+"/64")
	addRoute6(t, p.LAN2, "default", "via", "2001:db8:1:101::1")
	for _, isp := range []struct{ ns, own, other, router, far, bcp38 string }{
		{d.ISP1, prefix1, prefix2, d.WAN1v6, "2001:db8:100:1::1", "2001:db8:1::/64, " + prefix1},
		{d.ISP2, prefix2, prefix1, d.WAN2v6, "2001:db8:100:2::1", "2001:db8:2::/64, " + prefix2},
	} {
		addRoute6(t, isp.ns, isp.own, "via", isp.router)
		addRoute6(t, isp.ns, isp.other, "via", map[string]string{d.ISP1: "2001:db8:100:1::2", d.ISP2: "2001:db8:100:2::2"}[isp.ns])
		run(t, isp.ns, "nft", "delete", "table", "netdev", "bcp38")
		nft(t, isp.ns, bcp38Ruleset6(map[string]string{d.ISP1: d.WAN1, d.ISP2: d.WAN2}[isp.ns], isp.bcp38))
		addRoute6(t, d.Far, isp.own, "via", isp.far, "src", d.Service6)
	}
	settle6(t, p.LAN2, d.Router)
	return p
}

// config: both links with NAT66 for the ULA LAN and their own /56,
// checked fast against the far host in each family. isp1's /56 is
// delegated (prefixes6: auto, from the route a DHCPv6-PD client installs:
// delegate), isp2's is given.
func (p *prefixesWAN) config() string {
	return strings.Replace(strings.Replace(checkedConfig6(p.dualWAN),
		"    nat: true\n", "    nat: true\n    prefixes6: auto\n", 1),
		"    weight: 1\n    nat: true\n    check", "    weight: 1\n    nat: true\n    prefixes6: ["+prefix2+"]\n    check", 1)
}

// sources counts where n flows from src arrived at far, by the address far
// saw.
func (p *prefixesWAN) flows(t testing.TB, ns, src, target string, srv *echoServer, n int) connectResult {
	t.Helper()
	return connectN(t, ns, target, srv, n, dialOpts{Src: src, Timeout: time.Second})
}

// delegate installs isp1's /56 as dhcpcd does when its DHCPv6-PD client
// on wan1 is delegated it: an unreachable route on lo with protocol dhcp
// (dnsmasq, the DHCPv6 server here, cannot delegate prefixes), or with
// del, removes it as dhcpcd does when the delegation ends.
func (p *prefixesWAN) delegate(t testing.TB, del bool) {
	t.Helper()
	verb := "add"
	if del {
		verb = "del"
	}
	run(t, p.Router, "ip", "-6", "route", verb, "unreachable", prefix1, "dev", "lo", "proto", "dhcp", "metric", "1001")
}

// waitPrefixRule waits up to 5 s until the router has (or, without want,
// lacks) the ip rule of isp1's /56.
func (p *prefixesWAN) waitPrefixRule(t testing.TB, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(run(t, p.Router, "ip", "-6", "rule", "show"), "from "+prefix1+" lookup") != want {
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s, ip rule from %s present: %v, want %v\n%s", prefix1, !want, want, run(t, p.Router, "ip", "-6", "rule", "show"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func natRules(t testing.TB, ns string) string {
	t.Helper()
	return run(t, ns, "nft", "list", "chain", "inet", "flowpin", "nat")
}

// TestPrefixes6 is issue 23's "done when", in one topology: the control
// without flowpin, each prefix by its own ISP untranslated, isp1's IPv6
// outage (translation with host bits kept, isp2's flows untouched), its
// return (own prefix again, translated flows kept), and down.
func TestPrefixes6(t *testing.T) {
	p := newPrefixesWAN(t)
	d := p.dualWAN
	srv := startEchoServer(t, d.Far, hostPort(d.Service6, 0))
	target := hostPort(d.Service6, srv.Port())

	// Control: a plain dual default route, spreading flows by their ports.
	run(t, d.Router, "ip", "-6", "route", "replace", "default", "nexthop", "via", "fe80::1", "dev", "wan1", "nexthop", "via", d.GW2v6, "dev", "wan2")
	setSysctl(t, d.Router, "net.ipv6.fib_multipath_hash_policy", "1")
	lost := 0
	for _, src := range []string{host1a, host1b} {
		r := p.flows(t, d.LAN, src, target, srv, 30)
		lost += r.Failed
	}
	drops := d.bcp38Drops6(t, d.ISP1) + d.bcp38Drops6(t, d.ISP2)
	t.Logf("control, a dual default route without flowpin: %d of 60 flows lost (BCP38 dropped %d packets)", lost, drops)
	if lost < 10 || drops == 0 {
		t.Errorf("control: %d of 60 flows lost, %d packets dropped by BCP38; a dual default route should lose a large share", lost, drops)
	}
	setSysctl(t, d.Router, "net.ipv6.fib_multipath_hash_policy", "0")
	run(t, d.Router, "ip", "-6", "route", "replace", "default", "via", "fe80::1", "dev", "wan1")
	p.delegate(t, false)
	before := state(t, d.Router)

	dm := startDaemon(t, d.Router, p.config())
	dm.waitFamilies(t, "isp1", [2]string{"up", "up"})
	dm.waitFamilies(t, "isp2", [2]string{"up", "up"})

	// After apply: each prefix by its own ISP, untranslated; the ULA by
	// NAT66 beside it.
	srv.Reset()
	for _, c := range []struct{ ns, src string }{{d.LAN, host1a}, {d.LAN, host1b}, {p.LAN2, host2a}, {p.LAN2, host2b}} {
		if r := p.flows(t, c.ns, c.src, target, srv, 30); r.Failed != 0 || r.PerSource[netip.MustParseAddr(c.src)] != 30 {
			t.Errorf("after apply: from %s %d of 30 failed, far saw %v; want all from %s itself", c.src, r.Failed, r.PerSource, c.src)
		}
	}
	// The router's own traffic from its LAN address in isp1's prefix
	// takes the prefix rule too.
	if r := p.flows(t, d.Router, "2001:db8:1:100::1", target, srv, 10); r.Failed != 0 || r.PerSource[netip.MustParseAddr("2001:db8:1:100::1")] != 10 {
		t.Errorf("the router's own flows from 2001:db8:1:100::1: %d of 10 failed, far saw %v; want all from itself", r.Failed, r.PerSource)
	}
	if r := p.flows(t, d.LAN, d.LANHost6, target, srv, 20); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1v6)]+r.PerSource[netip.MustParseAddr(d.WAN2v6)] != 20 {
		t.Errorf("NAT66 beside the prefixes: from %s %d of 20 failed, far saw %v; want all masqueraded to a link", d.LANHost6, r.Failed, r.PerSource)
	}
	p.checkStatus(t, false)
	cfg := dm.cfg
	out, err := flowpin(t, d.Router, "verify", "-c", cfg, "--no-probe")
	for _, want := range []string{
		"prefix " + prefix1 + ": a flow from it leaves by link isp1, wan1 via fe80::1 (ip route get 2001:2::1 from 2001:db8:1:100::f1 iif lan)",
		"prefix " + prefix2 + ": a flow from it leaves by link isp2, wan2 via 2001:db8:2::1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify (%v) lacks %q:\n%s", err, want, out)
		}
	}
	p.explain(t, cfg, "leaves by wan1 via fe80::1 (link isp1) with source "+host1a, "is link isp1's own prefix: it leaves untranslated")

	// isp2's prefix holds flows open through the outage and the return.
	held2 := startLongLived(t, d.LAN, target, srv, 8, dialOpts{Src: host1b})
	time.Sleep(300 * time.Millisecond)

	// Outage: isp1's IPv6 dies silently.
	start := time.Now()
	repair := outage(t, d.ISP1, "ipv6")
	var took time.Duration
	for {
		// A short timeout: a flow still sent by dead isp1 fails fast, so
		// the figure is the failover's, not the probe flow's timeout.
		r := connectN(t, d.LAN, target, srv, 1, dialOpts{Src: host1a, Timeout: 200 * time.Millisecond})
		if r.OK == 1 && r.PerSource[netip.MustParseAddr(host1b)] == 1 {
			took = time.Since(start)
			break
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("isp1's IPv6 down: no flow from %s arrived translated within 6 s (last: %v %v)\n%s", host1a, r.PerSource, r.Errors, natRules(t, d.Router))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("failover: the first new flow from %s arrived as %s %v after isp1's IPv6 died", host1a, host1b, took.Round(10*time.Millisecond))
	if took > 3500*time.Millisecond {
		t.Errorf("failover took %v; want about 2 s", took)
	}
	srv.Reset()
	if r := p.flows(t, d.LAN, host1a, target, srv, 20); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host1b)] != 20 {
		t.Errorf("isp1 down: from %s %d of 20 failed, far saw %v; want all as %s", host1a, r.Failed, r.PerSource, host1b)
	}
	if r := p.flows(t, p.LAN2, host2a, target, srv, 10); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host2b)] != 10 {
		t.Errorf("isp1 down: from %s %d of 10 failed, far saw %v; want all as %s (its own host bits)", host2a, r.Failed, r.PerSource, host2b)
	}
	if r := p.flows(t, d.LAN, host1b, target, srv, 10); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host1b)] != 10 {
		t.Errorf("isp1 down: from %s %d of 10 failed, far saw %v; want all from itself", host1b, r.Failed, r.PerSource)
	}
	p.checkStatus(t, true)
	p.explain(t, cfg, "leaves by wan2 via 2001:db8:2::1 (link isp2) with source "+host1b, "translated 1:1 onto link isp2's "+prefix2)
	// verify checks against the daemon's plan: isp1's side out of the
	// IPv6 route, its prefix rule gone and its prefix translated are what
	// the daemon wants, not drift.
	verifyAsDaemon := func(when string) {
		t.Helper()
		if out, err := flowpin(t, d.Router, "verify", "-c", cfg, "--no-probe"); err != nil || !strings.Contains(out, "isp1 out of the IPv6 multipath route (") {
			t.Errorf("verify %s: %v\n%s", when, err, out)
		}
	}
	verifyAsDaemon("with isp1's IPv6 down")
	// The delegation is withdrawn while isp1 is down (dhcpcd does that
	// when the uplink loses its carrier); the hosts keep their addresses
	// from it, so the prefix stays isp1's, translated.
	p.delegate(t, true)
	time.Sleep(2 * time.Second) // the route event's sync
	srv.Reset()
	if r := p.flows(t, d.LAN, host1a, target, srv, 10); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host1b)] != 10 {
		t.Errorf("isp1 down, its delegation withdrawn: from %s %d of 10 failed, far saw %v; want all as %s", host1a, r.Failed, r.PerSource, host1b)
	}
	verifyAsDaemon("with isp1's IPv6 down and its delegation withdrawn")
	p.delegate(t, false)
	held1 := startLongLived(t, d.LAN, target, srv, 8, dialOpts{Src: host1a})
	time.Sleep(300 * time.Millisecond)

	// Return: new flows from isp1's prefix leave as themselves again; the
	// flows translated during the outage stay up, translated, on isp2.
	repair()
	dm.waitFamilies(t, "isp1", [2]string{"up", "up"})
	srv.Reset()
	if r := p.flows(t, d.LAN, host1a, target, srv, 20); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host1a)] != 20 {
		t.Errorf("isp1 back: from %s %d of 20 failed, far saw %v; want all from itself", host1a, r.Failed, r.PerSource)
	}
	if nat := natRules(t, d.Router); strings.Contains(nat, "snat ip6 prefix") {
		t.Errorf("isp1 back: the translation is still in the table:\n%s", nat)
	}
	time.Sleep(stallAfter + 500*time.Millisecond)
	if b := heldBroken(t, "translated", held1, host1b); b != 0 {
		t.Errorf("%d of 8 flows translated during the outage broke after isp1 came back", b)
	}
	if b := heldBroken(t, "isp2's prefix", held2, host1b); b != 0 {
		t.Errorf("%d of 8 established flows of isp2's prefix broke through isp1's outage and return", b)
	}
	p.checkStatus(t, false)
	for _, want := range []string{
		"prefix " + prefix1 + " of link isp1: its link is down, new flows are translated to " + prefix2 + " on isp2",
		"prefix " + prefix1 + " of link isp1: its link is back, new flows leave by it untranslated",
	} {
		if !strings.Contains(dm.logs(), want) {
			t.Errorf("the daemon's log lacks %q", want)
		}
	}

	// prefixes6: auto follows the delegation: it ends, the prefix's rule
	// goes; it comes back, so does the rule, and the flows.
	p.delegate(t, true)
	p.waitPrefixRule(t, false)
	p.delegate(t, false)
	p.waitPrefixRule(t, true)
	srv.Reset()
	if r := p.flows(t, d.LAN, host1a, target, srv, 10); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host1a)] != 10 {
		t.Errorf("delegated again: from %s %d of 10 failed, far saw %v; want all from itself", host1a, r.Failed, r.PerSource)
	}

	if _, err := dm.stop(); err != nil {
		t.Fatalf("daemon: %v", err)
	}
	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the kernel (-before +after):\n%s", diff)
	}

	// isp1 down at boot (its port is down): a one-off apply translates
	// its prefix from the start.
	run(t, d.Router, "ip", "link", "set", "wan1", "down")
	out = apply(t, d.Router, p.config())
	if !strings.Contains(out, "link isp1 left out of the IPv6 multipath route") {
		t.Errorf("apply with wan1 down: no warning about isp1:\n%s", out)
	}
	srv.Reset()
	if r := p.flows(t, d.LAN, host1a, target, srv, 10); r.Failed != 0 || r.PerSource[netip.MustParseAddr(host1b)] != 10 {
		t.Errorf("isp1 down at boot: from %s %d of 10 failed, far saw %v; want all as %s", host1a, r.Failed, r.PerSource, host1b)
	}
}

// checkStatus: status lists each link's prefixes, and whether isp1's is
// translated now.
func (p *prefixesWAN) checkStatus(t testing.TB, translated bool) {
	t.Helper()
	out, err := flowpin(t, p.Router, "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	want := fmt.Sprintf("%s (isp1", prefix1)
	if translated {
		want = fmt.Sprintf("%s (isp1, down: translated to %s on isp2)", prefix1, prefix2)
	}
	if !strings.Contains(out, want) || !strings.Contains(out, prefix2+" (isp2") {
		t.Errorf("status lacks %q or isp2's prefix:\n%s", want, out)
	}
	out, err = flowpin(t, p.Router, "status", "--json")
	var js struct {
		Links []struct {
			Name      string
			Prefixes6 []struct {
				Prefix     string
				OwnLink    bool `json:"own_link"`
				Translated bool
				To         []struct{ Link, Prefix string }
			}
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &js) != nil || len(js.Links) != 2 || len(js.Links[0].Prefixes6) != 1 || len(js.Links[1].Prefixes6) != 1 {
		t.Fatalf("status --json (%v):\n%s", err, out)
	}
	p1 := js.Links[0].Prefixes6[0]
	if p1.Prefix != prefix1 || p1.Translated != translated || p1.OwnLink == translated || translated && (len(p1.To) != 1 || p1.To[0].Link != "isp2" || p1.To[0].Prefix != prefix2) {
		t.Errorf("status --json: isp1's prefixes6 %+v, want %s translated %v", p1, prefix1, translated)
	}
}

// explain asks about a new flow from host1a and wants its summary to
// start with summary and its steps to contain step.
func (p *prefixesWAN) explain(t testing.TB, cfg, summary, step string) {
	t.Helper()
	out, err := flowpin(t, p.Router, "explain", "-c", cfg, "--iif", "lan", "--from", host1a, "--proto", "tcp", "--sport", "40000", "--dport", "443", p.Service6)
	if err != nil || !strings.Contains(out, summary) || !strings.Contains(out, step) {
		t.Errorf("explain (%v): want %q and %q:\n%s", err, summary, step, out)
	}
}
