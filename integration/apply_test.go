package integration

import (
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// apply runs `flowpin apply` with cfg in ns and fails the test on error.
func apply(t testing.TB, ns, cfg string) string {
	t.Helper()
	out, err := flowpin(t, ns, "apply", "-c", writeFile(t, "flowpin.yaml", cfg))
	if err != nil {
		t.Fatalf("flowpin apply: %v\n%s", err, out)
	}
	return out
}

var countersRE = regexp.MustCompile(`packets \d+ bytes \d+`)

// state is snapshot with nft counter values blanked: traffic moves them,
// and they are not state anyone applied.
func state(t testing.TB, ns string) string {
	t.Helper()
	return countersRE.ReplaceAllString(snapshot(t, ns), "packets _ bytes _")
}

var writesRE = regexp.MustCompile(`(\d+) kernel writes`)

func kernelWrites(t testing.TB, out string) int {
	t.Helper()
	m := writesRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no write count in %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// share is the fraction of connections that arrived from addr.
func share(perSource map[netip.Addr]int, addr string) float64 {
	total := 0
	for _, n := range perSource {
		total += n
	}
	if total == 0 {
		return 0
	}
	return float64(perSource[netip.MustParseAddr(addr)]) / float64(total)
}

// checkSplit asserts that the connections counted at the far end split over
// the two WAN addresses by the weights, within a tolerance wide enough for
// the hash's randomness (n=240: sd of the share is under 0.033) and narrow
// enough that a wrong weight (or no balancing) fails.
func checkSplit(t *testing.T, d *dualWAN, perSource map[netip.Addr]int, w1, w2 int) {
	t.Helper()
	want := float64(w1) / float64(w1+w2)
	got := share(perSource, d.WAN1)
	t.Logf("far end saw %v: isp1 share %.2f, weights want %.2f", perSource, got, want)
	if got < want-0.12 || got > want+0.12 {
		t.Errorf("isp1 carried %.2f of new connections; weights %d:%d want %.2f", got, w1, w2, want)
	}
	if n := len(perSource); n != 2 {
		t.Errorf("connections arrived from %d sources, want the 2 WAN addresses: %v", n, perSource)
	}
}

func TestDualWANNAT(t *testing.T) {
	d := newDualWAN(t)
	srvFar := startEchoServer(t, d.Far, d.Service+":0")
	srvRouter := startEchoServer(t, d.Router, "0.0.0.0:0")
	wan2 := fmt.Sprintf("%s:%d", d.WAN2, srvRouter.Port())
	wan1 := fmt.Sprintf("%s:%d", d.WAN1, srvRouter.Port())

	// Before: the reply to a connection to WAN2 leaves by main's default
	// (wan1) and ISP1 drops it as spoofed.
	before := d.bcp38Drops(t, d.ISP1)
	if r := connectN(t, d.Far, wan2, srvRouter, 1, dialOpts{Timeout: time.Second}); r.OK != 0 {
		t.Fatal("far -> WAN2 worked before apply: the topology does not model the problem")
	}
	if d.bcp38Drops(t, d.ISP1) == before {
		t.Error("ISP1 dropped nothing: the failure before apply was not the asymmetric reply")
	}

	out := apply(t, d.Router, d.config(3, 1))
	t.Log(strings.TrimSpace(out))

	for _, dst := range []string{d.WAN1, d.WAN2} {
		if err := pingTimeout(d.Far, "", dst, 2*time.Second); err != nil {
			t.Errorf("ping far -> %s after apply: %v", dst, err)
		}
	}
	for _, target := range []string{wan1, wan2} {
		if r := connectN(t, d.Far, target, srvRouter, 20, dialOpts{}); r.Failed != 0 {
			t.Errorf("TCP far -> %s: %d of 20 failed: %v", target, r.Failed, r.Errors[0])
		}
	}

	drops1, drops2 := d.bcp38Drops(t, d.ISP1), d.bcp38Drops(t, d.ISP2)
	r := connectN(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, srvFar.Port()), srvFar, 240, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d of 240 LAN connections failed, first: %v", r.Failed, r.Errors[0])
	}
	checkSplit(t, d, r.PerSource, 3, 1)
	if a, b := d.bcp38Drops(t, d.ISP1)-drops1, d.bcp38Drops(t, d.ISP2)-drops2; a+b != 0 {
		t.Errorf("ISPs dropped %d+%d spoofed packets during LAN traffic: something left by the wrong link", a, b)
	}
}

// pinningRun holds long-lived LAN connections while flowpin is re-applied
// with other weights, twice. breakPinning removes the restore rules after
// each apply (the negative control). It returns the connections' fates and
// the far end's view of a fresh batch made after the last apply.
func pinningRun(t *testing.T, breakPinning bool) ([]connStatus, connectResult, *dualWAN) {
	d := newDualWAN(t)
	status, fresh := reweightRun(t, d, d.Service, d.config, 24, 240, breakPinning)
	return status, fresh, d
}

// reweightRun is pinningRun's body for either family: held flows to
// service, config by weights, and the size of the fresh batch.
func reweightRun(t *testing.T, d *dualWAN, service string, config func(w1, w2 int) string, held, fresh int, breakPinning bool) ([]connStatus, connectResult) {
	srv := startEchoServer(t, d.Far, hostPort(service, 0))
	target := hostPort(service, srv.Port())
	sabotage := func() {
		if breakPinning {
			run(t, d.Router, "nft", "flush", "chain", "inet", "flowpin", "prerouting")
		}
	}
	apply(t, d.Router, config(1, 1))
	sabotage()
	ll := startLongLived(t, d.LAN, target, srv, held, dialOpts{})
	time.Sleep(500 * time.Millisecond)
	for _, w := range [][2]int{{1, 4}, {4, 1}} {
		apply(t, d.Router, config(w[0], w[1]))
		sabotage()
		// Long enough for a misrouted flow to count as stalled.
		time.Sleep(stallAfter + time.Second)
	}
	status := ll.stop()
	srv.Reset()
	return status, connectN(t, d.LAN, target, srv, fresh, dialOpts{})
}

func TestPinningSurvivesReapply(t *testing.T) {
	status, fresh, d := pinningRun(t, false)
	perLink := map[netip.Addr]int{}
	for i, s := range status {
		perLink[s.Remote.Addr()]++
		if s.Stalled || s.Err != nil || s.Echoes < 50 {
			t.Errorf("connection %d (%v via %v) broke: stalled=%v err=%v echoes=%d maxRTT=%v", i, s.Local, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes, s.MaxRTT)
		}
	}
	t.Logf("long-lived connections per link: %v", perLink)
	if fresh.Failed != 0 {
		t.Fatalf("%d new connections failed after re-apply: %v", fresh.Failed, fresh.Errors[0])
	}
	checkSplit(t, d, fresh.PerSource, 4, 1)
}

// The same run without the conntrack restore must break connections, or
// the test above proves nothing.
func TestPinningNeedsRestore(t *testing.T) {
	status, _, _ := pinningRun(t, true)
	broken := 0
	for _, s := range status {
		if s.Stalled || s.Err != nil {
			broken++
		}
	}
	t.Logf("%d of %d connections broke without the restore rules", broken, len(status))
	if broken == 0 {
		t.Error("no connection broke with the restore rules removed: the pinning test cannot fail")
	}
}

func serverConfig(s *multiHomedServer) string {
	return fmt.Sprintf(`links:
  - name: eth0
    interface: eth0
    gateway: %s
  - name: eth1
    interface: eth1
    gateway: %s
`, s.Gateway, s.Gateway)
}

func TestMultiHomedServer(t *testing.T) {
	s := newMultiHomedServer(t)
	srv := startEchoServer(t, s.Server, "0.0.0.0:0")

	// Before: the second address does not work from beyond the gateway
	// (its replies leave by eth0 and the switch drops them).
	if r := connectN(t, s.Far, fmt.Sprintf("%s:%d", s.Eth1Addr, srv.Port()), srv, 3, dialOpts{Timeout: time.Second}); r.OK == 3 {
		t.Fatal("far -> eth1 address worked before apply: the topology does not model the asymmetric-reply failure")
	}

	out := apply(t, s.Server, serverConfig(s))
	t.Log(strings.TrimSpace(out))

	for _, from := range []string{s.Neighbor, s.Far} {
		for _, dst := range []string{s.Eth0Addr, s.Eth1Addr} {
			if err := pingTimeout(from, "", dst, 2*time.Second); err != nil {
				t.Errorf("ping %s -> %s: %v", from, dst, err)
			}
			r := connectN(t, from, fmt.Sprintf("%s:%d", dst, srv.Port()), srv, 20, dialOpts{})
			if r.Failed != 0 {
				t.Errorf("TCP %s -> %s: %d of 20 failed: %v", from, dst, r.Failed, r.Errors[0])
			}
		}
	}

	// The server's own outbound connections, from an unbound socket and
	// from each address, to the far host and to the neighbour.
	farSrv := startEchoServer(t, s.Far, s.Service+":0")
	nbrSrv := startEchoServer(t, s.Neighbor, s.NeighborAddr+":0")
	for _, src := range []string{"", s.Eth0Addr, s.Eth1Addr} {
		for _, tgt := range []struct {
			srv  *echoServer
			addr string
		}{{farSrv, s.Service}, {nbrSrv, s.NeighborAddr}} {
			r := connectN(t, s.Server, fmt.Sprintf("%s:%d", tgt.addr, tgt.srv.Port()), tgt.srv, 20, dialOpts{Src: src})
			if r.Failed != 0 {
				t.Errorf("server (src %q) -> %s: %d of 20 failed: %v", src, tgt.addr, r.Failed, r.Errors[0])
			}
		}
	}
	// Unbound outbound flows spread over both interfaces.
	if got := farSrv.Sources(); len(got) != 2 {
		t.Errorf("far saw the server from %v, want both addresses", got)
	}
	if n0, n1 := s.spoofDrops(t, "srv0"), s.spoofDrops(t, "srv1"); n0+n1 != 0 {
		t.Logf("switch dropped %d/%d spoofed packets (from before apply)", n0, n1)
	}
}

// foreignState installs state flowpin does not own: an nftables table that
// sets mark bits outside flowpin's mask and counts packets that still have
// them after flowpin's restore, and an ip rule with its own table.
func foreignState(t *testing.T, ns string) {
	nft(t, ns, `table inet other {
	counter kept {}
	chain pre_before {
		type filter hook prerouting priority -160; policy accept;
		meta mark set meta mark | 0x1
		ct state new ct mark set ct mark | 0x10000
	}
	chain pre_after {
		type filter hook prerouting priority -140; policy accept;
		meta mark & 0x0000ff01 > 0x100 counter name "kept"
	}
}
`)
	run(t, ns, "ip", "route", "add", "10.99.0.0/24", "dev", "lan", "table", "300")
	run(t, ns, "ip", "rule", "add", "pref", "500", "from", "10.99.0.0/24", "lookup", "300")
}

func TestIdempotencyAndDown(t *testing.T) {
	d := newDualWAN(t)
	foreignState(t, d.Router)
	s0 := state(t, d.Router)

	out := apply(t, d.Router, d.config(3, 1))
	if kernelWrites(t, out) == 0 {
		t.Fatal("first apply wrote nothing")
	}
	s1 := state(t, d.Router)
	out = apply(t, d.Router, d.config(3, 1))
	if n := kernelWrites(t, out); n != 0 {
		t.Errorf("second apply made %d kernel writes, want 0", n)
	}
	if diff := cmp.Diff(s1, state(t, d.Router)); diff != "" {
		t.Errorf("second apply changed the kernel (-first +second):\n%s", diff)
	}
	if out, _ := flowpin(t, d.Router, "plan", "-c", writeFile(t, "f.yaml", d.config(3, 1))); !strings.Contains(out, "nothing to change") {
		t.Errorf("plan after apply: %s", out)
	}

	// Traffic: flowpin's restore keeps the other table's bit 0x1, and its
	// save keeps the ct mark bit 0x10000.
	srv := startEchoServer(t, d.Far, d.Service+":0")
	ll := startLongLived(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, srv.Port()), srv, 4, dialOpts{})
	time.Sleep(300 * time.Millisecond)
	ll.stop()
	if n := nftCounter(t, d.Router, "inet", "other", "kept"); n == 0 {
		t.Error("no packet carried both flowpin's mark and the foreign bit 0x1")
	}
	ct := run(t, d.Router, "conntrack", "-L", "-p", "tcp", "--dport", strconv.Itoa(srv.Port()))
	marks := regexp.MustCompile(`mark=(\d+)`).FindAllStringSubmatch(ct, -1)
	if len(marks) == 0 {
		t.Fatalf("no conntrack entries:\n%s", ct)
	}
	for _, m := range marks {
		v, _ := strconv.Atoi(m[1])
		if v&0x10000 == 0 || v&0xff00 == 0 {
			t.Errorf("ct mark %#x: want the foreign bit 0x10000 and a flowpin link mark", v)
		}
	}

	out, err := flowpin(t, d.Router, "down")
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(s0, state(t, d.Router)); diff != "" {
		t.Errorf("down did not restore the state before apply (-before +after):\n%s", diff)
	}
	out, err = flowpin(t, d.Router, "down")
	if err != nil || kernelWrites(t, out) != 0 {
		t.Errorf("second down: %v, %s", err, out)
	}
}

// A changed config changes only the difference.
func TestApplyChangesOnlyTheDifference(t *testing.T) {
	d := newDualWAN(t)
	apply(t, d.Router, d.config(3, 1))
	out, err := flowpin(t, d.Router, "apply", "-v", "-c", writeFile(t, "f.yaml", d.config(1, 1)))
	if err != nil {
		t.Fatal(err, out)
	}
	want := "ip route replace default table 100 proto 201 nexthop via 192.0.2.1 dev wan1 weight 1 nexthop via 198.51.100.1 dev wan2 weight 1\n" +
		"applied: 2 of 2 links in the multipath route, 1 kernel writes\n"
	if out != want {
		t.Errorf("weight change did:\n%s\nwant only:\n%s", out, want)
	}
}

func TestBadInput(t *testing.T) {
	d := newDualWAN(t)
	// Foreign state the collision checks must notice: a rule using table
	// 150, a route in table 160, a rule matching mark 0x300/0xff00.
	run(t, d.Router, "ip", "rule", "add", "pref", "600", "from", "10.98.0.0/24", "lookup", "150")
	run(t, d.Router, "ip", "route", "add", "10.97.0.0/24", "dev", "lan", "table", "160")
	run(t, d.Router, "ip", "rule", "add", "pref", "700", "fwmark", "0x300/0xff00", "lookup", "main")

	good := d.config(3, 1)
	link := func(extra string) string {
		return "links:\n  - name: isp1\n    interface: wan1\n    gateway: 192.0.2.1\n" + extra
	}
	cases := []struct {
		name   string
		config string // "" = no file
		want   string // in the one-line error
	}{
		{"missing file", "", "no such file or directory"},
		{"yaml syntax", "links:\n  - name: a\n   interface: x\n", "flowpin.yaml:1: yaml syntax error"},
		{"unknown key", link("    wieght: 2\n"), `flowpin.yaml:5: links[0]: unknown key "wieght" (did you mean "weight"?)`},
		{"no links", "links: []\n", "flowpin.yaml:1: links: no links"},
		{"duplicate names", good + "  - {name: isp1, interface: lan, gateway: 10.77.0.2}\n", `flowpin.yaml:12: links[2].name: duplicate link name "isp1"`},
		{"missing interface", link("  - {name: isp3, interface: wan3, gateway: 203.0.113.1}\n"), `flowpin.yaml:5: links[1].interface: "wan3" does not exist`},
		{"weight 0", link("    weight: 0\n"), "flowpin.yaml:5: links[0].weight: 0 is out of range (1..256)"},
		{"weight negative", link("    weight: -1\n"), "flowpin.yaml:5: links[0].weight: -1 is out of range"},
		{"weight over 256", link("    weight: 1000\n"), "flowpin.yaml:5: links[0].weight: 1000 is out of range"},
		{"gateway not an ip", strings.Replace(good, "gateway: 198.51.100.1", "gateway: isp2-gw", 1), `links[1].gateway: "isp2-gw" is not an IP address`},
		{"gateway unreachable", strings.Replace(good, "gateway: 198.51.100.1", "gateway: 198.51.99.1", 1), "links[1].gateway: 198.51.99.1 is neither on a subnet of wan2"},
		{"table used by a foreign rule", link("    table: 150\n"), `flowpin.yaml:5: links[0].table: table 150 is already used by ip rule "600: from 10.98.0.0/24 lookup 150"`},
		{"table holds foreign routes", "balance_table: 160\n" + link(""), "flowpin.yaml:1: balance_table: table 160 already holds routes flowpin does not own (10.97.0.0/24 dev lan"},
		{"mark used by a foreign rule", good + "  - {name: lan, interface: lan, gateway: 10.77.0.2}\n", `flowpin.yaml:12: links[2].mark: 0x300 collides with ip rule "700: from all fwmark 0x300/0xff00 lookup main"`},
	}
	before := state(t, d.Router)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := "/nonexistent/flowpin.yaml"
			if tc.config != "" {
				path = writeFile(t, "flowpin.yaml", tc.config)
			}
			out, err := flowpin(t, d.Router, "apply", "-c", path)
			checkRejected(t, out, err, tc.want)
			if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
				t.Errorf("rejected config changed the kernel (-before +after):\n%s", diff)
			}
		})
	}

	t.Run("no CAP_NET_ADMIN", func(t *testing.T) {
		// ip netns exec itself needs root: drop to nobody, with no
		// capabilities at all, after it, through setpriv (util-linux).
		cmd := exec.Command("ip", "netns", "exec", d.Router, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", flowpinBin, "apply", "-c", writeFile(t, "g.yaml", good))
		out, err := cmd.CombinedOutput()
		checkRejected(t, string(out), err, "needs CAP_NET_ADMIN")
		if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
			t.Errorf("unprivileged apply changed the kernel:\n%s", diff)
		}
	})
}

func checkRejected(t *testing.T, out string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; output:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Errorf("error is %d lines, want one:\n%s", len(lines), out)
	}
	if !strings.HasPrefix(lines[0], "flowpin: ") || !strings.Contains(out, want) {
		t.Errorf("error %q does not say %q", strings.TrimSpace(out), want)
	}
}

// `plan --full`, run by hand as a shell script in a fresh namespace, gives
// the same rules, routes and table as apply.
func TestPlanScriptMatchesApply(t *testing.T) {
	a, b := newDualWAN(t), newDualWAN(t)
	script, err := flowpin(t, a.Router, "plan", "--full", "-c", writeFile(t, "f.yaml", a.config(3, 1)))
	if err != nil {
		t.Fatal(err, script)
	}
	if out, err := tryRunStdin(a.Router, script, "bash", "-e"); err != nil {
		t.Fatalf("running the plan script: %v\n%s", err, out)
	}
	apply(t, b.Router, b.config(3, 1))
	view := func(ns string) string {
		return run(t, ns, "ip", "rule") + run(t, ns, "ip", "route", "show", "table", "all") +
			run(t, ns, "nft", "list", "chain", "inet", "flowpin", "prerouting") +
			run(t, ns, "nft", "list", "chain", "inet", "flowpin", "nat")
	}
	if diff := cmp.Diff(view(b.Router), view(a.Router)); diff != "" {
		t.Errorf("plan script and apply differ (-apply +script):\n%s", diff)
	}
}

// An ISP that is out at boot (interface down, or up with no address yet)
// is left out of the multipath route with a warning; apply succeeds and
// every new flow takes the other link. When it is back, apply adds it.
func TestLinkDownAtBoot(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	cfg := writeFile(t, "f.yaml", d.config(1, 1))

	for _, outage := range []struct {
		name        string
		break_, fix []string
	}{
		{"interface down", []string{"ip", "link", "set", "wan2", "down"}, []string{"ip", "link", "set", "wan2", "up"}},
		{"no address yet", []string{"ip", "addr", "flush", "dev", "wan2"}, []string{"ip", "addr", "add", "198.51.100.2/24", "dev", "wan2"}},
	} {
		t.Run(outage.name, func(t *testing.T) {
			run(t, d.Router, outage.break_...)
			out, err := flowpin(t, d.Router, "apply", "-c", cfg)
			if err != nil {
				t.Fatalf("apply with isp2 out failed: %v\n%s", err, out)
			}
			if !strings.Contains(out, "link isp2 left out of the multipath route") || !strings.Contains(out, "1 of 2 links") {
				t.Errorf("no warning about isp2:\n%s", out)
			}
			srv.Reset()
			if r := connectN(t, d.LAN, target, srv, 40, dialOpts{}); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1)] != 40 {
				t.Errorf("with isp2 out: %d failed, far saw %v; want all 40 via isp1", r.Failed, r.PerSource)
			}

			run(t, d.Router, outage.fix...)
			time.Sleep(100 * time.Millisecond) // carrier comes back asynchronously
			if out := apply(t, d.Router, d.config(1, 1)); !strings.Contains(out, "2 of 2 links") {
				t.Errorf("after isp2 is back: %s", out)
			}
			srv.Reset()
			r := connectN(t, d.LAN, target, srv, 240, dialOpts{})
			if r.Failed != 0 {
				t.Fatalf("%d failed after isp2 came back: %v", r.Failed, r.Errors[0])
			}
			checkSplit(t, d, r.PerSource, 1, 1)
		})
	}
}
