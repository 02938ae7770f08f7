package integration

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// policyLinks is the dual-WAN config with fast checks (300 ms × 3) and
// isp2 in tier tier2; extra is appended (policies, rules, default_policy).
func policyLinks(d *dualWAN, tier2 int, extra string) string {
	return checkedLinks(d, d.GW2, tier2, fastCheck(d), fastCheck(d)) + extra
}

// onLinks counts connections by the far end's view of their source: the
// router's NAT address says which link a flow took.
func onLinks(d *dualWAN, per map[netip.Addr]int) (isp1, isp2 int) {
	return per[netip.MustParseAddr(d.WAN1)], per[netip.MustParseAddr(d.WAN2)]
}

// Backup tier: isp2 carries nothing while isp1 is up, takes new flows about
// 1.5 s after isp1 dies silently, and gives them back when isp1 returns.
// Flows opened on isp2 meanwhile survive with failback keep and are deleted
// with failback flush.
func TestPolicyBackupTier(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		flush       bool
	}{
		{"default policy, failback keep", "", false},
		{"named policy, failback flush", `policies:
  - name: primary-first
    tiers: [[isp1], [isp2]]
    failback: flush
default_policy: primary-first
`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDualWAN(t)
			srv := startEchoServer(t, d.Far, d.Service+":0")
			target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
			tier := 2
			if tc.extra != "" {
				tier = 1 // the named policy alone makes isp2 a backup
			}
			// Flows pinned to isp2 by a rule are not the policy's: failback
			// flush must leave them alone.
			pinned := startEchoServer(t, d.Far, d.Service+":0")
			rule := fmt.Sprintf("rules:\n  - {name: to-isp2, proto: tcp, dst_ports: [%d], policy: isp2}\n", pinned.Port())
			dm := startDaemon(t, d.Router, policyLinks(d, tier, tc.extra+rule))
			dm.waitState(t, "isp1", "up", 5*time.Second)
			others := startLongLived(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, pinned.Port()), pinned, 8, dialOpts{})

			r := connectN(t, d.LAN, target, srv, 60, dialOpts{})
			if r.Failed != 0 {
				t.Fatalf("%d of 60 failed with both links up: %v", r.Failed, r.Errors[0])
			}
			if a, b := onLinks(d, r.PerSource); a != 60 || b != 0 {
				t.Fatalf("with isp1 up: %d/%d flows on isp1/isp2, want 60/0", a, b)
			}

			start := time.Now()
			restore := blackhole(t, d.ISP1)
			took := untilAllSucceed(t, d, srv, start, 10*time.Second)
			t.Logf("new flows all succeed %v after isp1 died silently (300ms × 3)", took.Round(10*time.Millisecond))
			if took > 4*time.Second {
				t.Errorf("failover to the backup took %v, want about 1.5 s", took)
			}
			srv.Reset()
			r = connectN(t, d.LAN, target, srv, 40, dialOpts{})
			if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 0 || b != 40 {
				t.Fatalf("isp1 down: %d/%d on isp1/isp2, %d failed; want 0/40/0", a, b, r.Failed)
			}

			held := startLongLived(t, d.LAN, target, srv, 8, dialOpts{})
			time.Sleep(300 * time.Millisecond)
			back := time.Now()
			const flushed = "failback: flushed the policy's flows on a lower tier"
			n := strings.Count(dm.logs(), flushed)
			restore()
			dm.waitState(t, "isp1", "up", 5*time.Second)
			t.Logf("isp1 up again after %v", time.Since(back).Round(10*time.Millisecond))
			if tc.flush {
				// The held flows break at the flush, in the sync a moment
				// after status says up: their stall counts from there.
				dm.waitLogged(t, flushed, n, 5*time.Second)
			}
			time.Sleep(stallAfter + 500*time.Millisecond)

			srv.Reset()
			r = connectN(t, d.LAN, target, srv, 40, dialOpts{})
			if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 40 || b != 0 {
				t.Errorf("isp1 back: %d/%d on isp1/isp2, %d failed; want 40/0/0", a, b, r.Failed)
			}
			broken := 0
			for _, s := range held.stop() {
				if s.Remote.Addr() != netip.MustParseAddr(d.WAN2) {
					t.Errorf("a held flow opened during the outage went by %v", s.Remote.Addr())
				}
				if s.Stalled || s.Err != nil {
					broken++
				}
			}
			for i, s := range others.stop() {
				if s.Remote.Addr() != netip.MustParseAddr(d.WAN2) || s.Stalled || s.Err != nil {
					t.Errorf("flow %d pinned to isp2 by a rule: by %v, stalled=%v err=%v; want untouched on isp2", i, s.Remote.Addr(), s.Stalled, s.Err)
				}
			}
			t.Logf("held flows on isp2 broken after failback: %d of 8", broken)
			if tc.flush && broken != 8 {
				t.Errorf("failback flush: %d of 8 flows on isp2 broke, want all", broken)
			}
			if !tc.flush && broken != 0 {
				t.Errorf("failback keep: %d of 8 flows on isp2 broke, want none", broken)
			}
		})
	}
}

// Rules: a port rule pins all its flows to one link, a source rule on a
// two-tier policy sends its host to tier 1, the rest stays balanced, the
// router's own connections obey the rules, and a policy whose links are all
// down answers at once with ICMP unreachable.
func TestPolicyRules(t *testing.T) {
	d := newDualWAN(t)
	addAddr(t, d.LAN, "eth0", "10.77.0.3/24")
	pinned := startEchoServer(t, d.Far, d.Service+":0")
	other := startEchoServer(t, d.Far, d.Service+":0")
	dead := startEchoServer(t, d.Far, d.Service+":0")
	cfg := d.config(1, 1) + fmt.Sprintf(`policies:
  - name: isp2-first
    tiers: [[isp2], [isp1]]
  - name: isp1-only
    tiers: [[isp1]]
    last_resort: unreachable
rules:
  - name: pinned-port
    proto: tcp
    dst_ports: [%d]
    policy: isp2
  - name: second-host
    src: [10.77.0.3]
    policy: isp2-first
  - name: dead-end
    proto: tcp
    dst_ports: [%d]
    policy: isp1-only
`, pinned.Port(), dead.Port())
	path := writeFile(t, "flowpin.yaml", cfg)
	if out, err := flowpin(t, d.Router, "apply", "-c", path); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	pt := fmt.Sprintf("%s:%d", d.Service, pinned.Port())
	ot := fmt.Sprintf("%s:%d", d.Service, other.Port())

	r := connectN(t, d.LAN, pt, pinned, 60, dialOpts{})
	a, b := onLinks(d, r.PerSource)
	t.Logf("port rule: %d/%d on isp1/isp2, %d failed", a, b, r.Failed)
	if r.Failed != 0 || a != 0 || b != 60 {
		t.Errorf("port rule: %d/%d on isp1/isp2, %d failed; want 0/60/0", a, b, r.Failed)
	}
	r = connectN(t, d.LAN, ot, other, 60, dialOpts{Src: "10.77.0.3"})
	a, b = onLinks(d, r.PerSource)
	t.Logf("source rule: %d/%d on isp1/isp2", a, b)
	if r.Failed != 0 || a != 0 || b != 60 {
		t.Errorf("source rule: %d/%d on isp1/isp2, %d failed; want 0/60/0", a, b, r.Failed)
	}
	other.Reset()
	r = connectN(t, d.LAN, ot, other, 60, dialOpts{Src: d.LANHost})
	a, b = onLinks(d, r.PerSource)
	t.Logf("unmatched: %d/%d on isp1/isp2", a, b)
	if r.Failed != 0 || a == 0 || b == 0 {
		t.Errorf("unmatched traffic: %d/%d on isp1/isp2, %d failed; want both links used", a, b, r.Failed)
	}
	pinned.Reset()
	r = connectN(t, d.Router, pt, pinned, 40, dialOpts{})
	a, b = onLinks(d, r.PerSource)
	t.Logf("router's own, port rule: %d/%d on isp1/isp2", a, b)
	if r.Failed != 0 || a != 0 || b != 40 {
		t.Errorf("router's own connections: %d/%d on isp1/isp2, %d failed; want 0/40/0", a, b, r.Failed)
	}

	// Without the daemon a link is up when its interface is up with an
	// address: take wan1 down and apply again.
	run(t, d.Router, "ip", "link", "set", "wan1", "down")
	if out, err := flowpin(t, d.Router, "apply", "-c", path); err != nil {
		t.Fatalf("apply with wan1 down: %v\n%s", err, out)
	}
	// The LAN's clients only: the router's own connect is rerouted by the
	// output hook, and a failed reroute drops the SYN without an error to
	// the socket (it times out; see the report).
	for _, ns := range []string{d.LAN} {
		start := time.Now()
		_, err := echoOnce(ns, fmt.Sprintf("%s:%d", d.Service, dead.Port()), nil, "x", 3*time.Second)
		took := time.Since(start)
		t.Logf("%s: all links of isp1-only down: %v after %v", ns, err, took.Round(time.Millisecond))
		if err == nil || !(strings.Contains(err.Error(), "no route to host") || strings.Contains(err.Error(), "network is unreachable")) {
			t.Errorf("%s: connect with every link of the policy down: %v, want host/network unreachable", ns, err)
		}
		if took > time.Second {
			t.Errorf("%s: unreachable took %v, want at once", ns, took)
		}
	}
}

// Every validation error of the policy config: refused with one line naming
// file:line, field and value, and nothing reaches the kernel.
func TestPolicyValidationErrors(t *testing.T) {
	d := newDualWAN(t)
	links := d.config(1, 1)
	var manyPolicies, manyRules strings.Builder
	manyPolicies.WriteString("policies:\n")
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&manyPolicies, "  - {name: p%d, tiers: [[isp1]]}\n", i)
	}
	manyRules.WriteString("rules:\n")
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&manyRules, "  - {name: r%d, src: [10.77.0.%d], policy: isp1, sticky: 1m}\n", i, i%250+1)
	}
	rule := func(body string) string { return "rules:\n  - name: r\n" + body }
	pol := func(body string) string { return "policies:\n  - name: p\n" + body }
	cases := []struct {
		name, extra, field, value string
	}{
		{"unknown policy", rule("    policy: nope\n"), "policy", "nope"},
		{"unknown link in a tier", pol("    tiers: [[isp1], [isp3]]\n"), "tiers", "isp3"},
		{"unknown default_policy", "default_policy: nope\n", "default_policy", "nope"},
		{"rule with no policy", rule("    dst: [203.0.113.0/24]\n"), "policy", ""},
		{"ports without tcp/udp", rule("    dst_ports: [80]\n    policy: isp1\n"), "dst_ports", "proto any"},
		{"ports with icmp", rule("    proto: icmp\n    src_ports: [80]\n    policy: isp1\n"), "src_ports", "proto icmp"},
		{"empty tier", pol("    tiers: [[isp1], []]\n"), "tiers", ""},
		{"link in two tiers", pol("    tiers: [[isp1], [isp2, isp1]]\n"), "tiers", "isp1"},
		{"bad CIDR", rule("    src: [10.0.0.0/33]\n    policy: isp1\n"), "src", "10.0.0.0/33"},
		{"bad duration", rule("    sticky: 10x\n    policy: isp1\n"), "sticky", "10x"},
		{"bad range", rule("    proto: tcp\n    dst_ports: [\"20-10\"]\n    policy: isp1\n"), "dst_ports", "20-10"},
		{"too many policies", manyPolicies.String(), "policies", ""},
		{"too many sticky rules", manyRules.String(), "rules", ""},
	}
	lineRE := regexp.MustCompile(`^flowpin: \S*flowpin\.yaml:\d+: `)
	before := state(t, d.Router)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := flowpin(t, d.Router, "apply", "-c", writeFile(t, "flowpin.yaml", links+tc.extra))
			t.Logf("%s", strings.TrimSpace(out))
			checkRejected(t, out, err, tc.field)
			if !lineRE.MatchString(out) {
				t.Errorf("error does not name file:line: %q", out)
			}
			if !strings.Contains(out, tc.value) {
				t.Errorf("error does not name the value %q: %q", tc.value, out)
			}
			if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
				t.Errorf("rejected config changed the kernel (-before +after):\n%s", diff)
			}
		})
	}
}

// down removes policies, rules and sticky sets exactly, and a second apply
// writes nothing.
func TestPolicyDownAndIdempotent(t *testing.T) {
	d := newDualWAN(t)
	before := state(t, d.Router)
	cfg := writeFile(t, "flowpin.yaml", policyLinks(d, 2, `policies:
  - name: isp2-first
    tiers: [[isp2], [isp1]]
    last_resort: blackhole
    failback: flush
rules:
  - name: web
    proto: tcp
    dst_ports: [443, "8000-8100"]
    policy: isp2-first
    sticky: 10m
  - name: bypass
    dst: [10.200.0.0/16]
    policy: main
  - name: pin
    src: [10.77.0.3]
    policy: isp1
`))
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := flowpin(t, d.Router, "apply", "-c", cfg)
	if err != nil {
		t.Fatalf("second apply: %v\n%s", err, out)
	}
	if n := kernelWrites(t, out); n != 0 {
		t.Errorf("second apply made %d kernel writes, want 0:\n%s", n, out)
	}
	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
		t.Errorf("down left a difference (-before +after):\n%s", diff)
	}
}

// Sticky: a dozen LAN sources with ten flows each; with the sticky rule
// every source's flows are on one link and the sources use both links;
// without it at least one source's flows spread over both.
func TestPolicySticky(t *testing.T) {
	for _, sticky := range []bool{true, false} {
		t.Run(fmt.Sprintf("sticky=%v", sticky), func(t *testing.T) {
			d := newDualWAN(t)
			srv := startEchoServer(t, d.Far, d.Service+":0")
			target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
			cfg := d.config(1, 1)
			if sticky {
				cfg += "rules:\n  - {name: banking, src: [10.77.0.0/24], policy: default, sticky: 10m}\n"
			}
			if out, err := flowpin(t, d.Router, "apply", "-c", writeFile(t, "flowpin.yaml", cfg)); err != nil {
				t.Fatalf("apply: %v\n%s", err, out)
			}
			var srcs []string
			for i := 0; i < 12; i++ {
				src := fmt.Sprintf("10.77.0.%d", 10+i)
				addAddr(t, d.LAN, "eth0", src+"/24")
				srcs = append(srcs, src)
			}
			spread, on1, on2 := 0, 0, 0
			var lines []string
			for _, src := range srcs {
				r := connectN(t, d.LAN, target, srv, 10, dialOpts{Src: src, Parallel: 1})
				if r.Failed != 0 {
					t.Fatalf("%s: %d of 10 failed: %v", src, r.Failed, r.Errors[0])
				}
				a, b := onLinks(d, r.PerSource)
				lines = append(lines, fmt.Sprintf("%s %d/%d", src, a, b))
				switch {
				case a > 0 && b > 0:
					spread++
				case a > 0:
					on1++
				default:
					on2++
				}
			}
			t.Logf("per source isp1/isp2: %s", strings.Join(lines, ", "))
			t.Logf("sources on isp1 only %d, isp2 only %d, spread %d", on1, on2, spread)
			if sticky && (spread != 0 || on1 == 0 || on2 == 0) {
				t.Errorf("sticky: %d sources spread, %d/%d on isp1/isp2 only; want 0 spread and both links used", spread, on1, on2)
			}
			if !sticky && spread == 0 {
				t.Errorf("control without sticky: no source's flows spread over both links")
			}
		})
	}
}

// markedEcho makes one echo round trip from ns with SO_MARK mark on the
// socket and returns the source the server saw.
func markedEcho(t testing.TB, ns, target string, srv *echoServer, mark int) netip.Addr {
	t.Helper()
	tok := randToken()
	err := nsDo(ns, func() error {
		dl := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, mark)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := dl.Dial("tcp4", target)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, tok+"\n"); err != nil {
			return err
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatalf("marked connection: %v", err)
	}
	ra, ok := srv.remote(tok)
	if !ok {
		t.Fatalf("server did not see the marked connection")
	}
	return ra.Addr().Unmap()
}

// VPN coexistence: wg-quick's and Tailscale's rules are in place before
// apply; apply accepts them, a socket marked 0xca6c keeps its mark (a test
// rule before flowpin's sends mark 0xca6c by isp2 only, so every marked
// flow arrives from isp2's address while unmarked ones split), and down
// leaves the VPN rules alone.
func TestPolicyVPNCoexistence(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	run(t, d.Router, "ip", "link", "add", "wg0", "type", "veth", "peer", "name", "wg0p") // no dummy module here
	linkUp(t, d.Router, "wg0")
	addAddr(t, d.Router, "wg0", "10.200.0.1/24")
	run(t, d.Router, "ip", "-4", "route", "add", "0.0.0.0/0", "dev", "wg0", "table", "51820")
	run(t, d.Router, "ip", "-4", "rule", "add", "not", "fwmark", "51820", "table", "51820")
	run(t, d.Router, "ip", "-4", "rule", "add", "table", "main", "suppress_prefixlength", "0")
	run(t, d.Router, "ip", "-4", "rule", "add", "fwmark", "0x80000/0xff0000", "lookup", "main", "pref", "5210")
	run(t, d.Router, "ip", "-4", "route", "add", "default", "via", d.GW2, "dev", "wan2", "table", "300")
	run(t, d.Router, "ip", "-4", "rule", "add", "pref", "500", "fwmark", "0xca6c", "lookup", "300")
	vpnRules := run(t, d.Router, "ip", "-4", "rule", "show")

	// A rule pins the service to isp1, so flowpin would set isp1's mark on
	// every new flow to it: the marked ones must keep 0xca6c instead.
	cfg := writeFile(t, "flowpin.yaml", d.config(1, 1)+fmt.Sprintf("rules:\n  - {name: svc, proto: tcp, dst_ports: [%d], policy: isp1}\n", srv.Port()))
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply beside wg-quick and Tailscale rules: %v\n%s", err, out)
	}
	marked := map[netip.Addr]int{}
	for i := 0; i < 30; i++ {
		marked[markedEcho(t, d.Router, target, srv, 0xca6c)]++
	}
	a, b := onLinks(d, marked)
	t.Logf("marked 0xca6c: %d/%d on isp1/isp2", a, b)
	if a != 0 || b != 30 {
		t.Errorf("marked sockets: %d/%d on isp1/isp2, want 0/30 (the mark must survive flowpin)", a, b)
	}
	srv.Reset()
	r := connectN(t, d.Router, target, srv, 40, dialOpts{})
	a, b = onLinks(d, r.PerSource)
	t.Logf("unmarked from the router, pinned port: %d/%d on isp1/isp2", a, b)
	if r.Failed != 0 || a != 40 || b != 0 {
		t.Errorf("unmarked to the pinned port: %d/%d on isp1/isp2, %d failed; want 40/0/0", a, b, r.Failed)
	}
	other := startEchoServer(t, d.Far, d.Service+":0")
	r = connectN(t, d.Router, fmt.Sprintf("%s:%d", d.Service, other.Port()), other, 40, dialOpts{})
	a, b = onLinks(d, r.PerSource)
	t.Logf("unmarked from the router, other port: %d/%d on isp1/isp2", a, b)
	if r.Failed != 0 || a == 0 || b == 0 {
		t.Errorf("unmarked to another port: %d/%d on isp1/isp2, %d failed; want both links", a, b, r.Failed)
	}
	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if diff := cmp.Diff(vpnRules, run(t, d.Router, "ip", "-4", "rule", "show")); diff != "" {
		t.Errorf("down changed the VPN rules (-before +after):\n%s", diff)
	}
}
