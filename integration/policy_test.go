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

// policyLinks is the dual-WAN config with fast checks (300 ms × 3) and
// isp2 in tier tier2; extra is appended (policies, rules, default_policy).
func policyLinks(d *dualWAN, tier2 int, extra string) string {
	return fmt.Sprintf(`links:
  - name: isp1
    interface: wan1
    gateway: %s
    nat: true
    check: {targets: [%s], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
  - name: isp2
    interface: wan2
    gateway: %s
    nat: true
    tier: %d
    check: {targets: [%s], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}
`, d.GW1, d.Service, d.GW2, tier2, d.Service) + extra
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
			dm := startDaemon(t, d.Router, policyLinks(d, tier, tc.extra))
			dm.waitState(t, "isp1", "up", 5*time.Second)

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
			restore()
			dm.waitState(t, "isp1", "up", 5*time.Second)
			t.Logf("isp1 up again after %v", time.Since(back).Round(10*time.Millisecond))
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
