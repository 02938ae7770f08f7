package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// stickyToISP2 is the rule of issue 18: a sticky rule whose policy is
// one link, isp2.
const stickyToISP2 = "rules:\n  - {name: s, proto: udp, policy: isp2, sticky: 10m}\n"

// udpQuery sends one DNS query over UDP from ns to a dns probe server and
// says whether an answer came back.
func udpQuery(ns, target string) error {
	return nsDo(ns, func() error {
		m := new(dns.Msg)
		m.SetQuestion("probe.example.", dns.TypeA)
		c := dns.Client{Net: "udp4", Timeout: time.Second}
		_, _, err := c.Exchange(m, target)
		return err
	})
}

// A sticky rule whose only link is down at boot: apply succeeds with a
// warning, unmatched flows go by isp1, `flowpin run` starts, and once
// wan2 is back the rule's flows go by isp2.
func TestStickyRuleLinkDownAtBoot(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	dnsSrv := startProbeServer(t, "dns", d.Far, d.Service+":53")
	cfg := writeFile(t, "flowpin.yaml", d.config(1, 1)+stickyToISP2)

	run(t, d.Router, "ip", "link", "set", "wan2", "down")
	out, err := flowpin(t, d.Router, "apply", "-c", cfg)
	t.Logf("apply with wan2 down:\n%s", strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("apply with the sticky rule's link down: %v, want exit 0 with a warning", err)
	}
	if !strings.Contains(out, "link isp2 left out of the multipath route: interface wan2 is down") {
		t.Errorf("apply did not warn that isp2 is down:\n%s", out)
	}
	r := connectN(t, d.LAN, target, srv, 30, dialOpts{})
	if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 30 || b != 0 {
		t.Errorf("unmatched flows with wan2 down: %d/%d on isp1/isp2, %d failed; want 30/0/0", a, b, r.Failed)
	}
	if err := udpQuery(d.LAN, d.Service+":53"); err == nil || len(dnsSrv.Sources()) != 0 {
		t.Errorf("the sticky rule's flow with its link down: err %v, server saw %v; want no way out (last resort unreachable)", err, dnsSrv.Sources())
	}

	// The daemon starts on the same state instead of exiting.
	dm := startDaemon(t, d.Router, d.config(1, 1)+stickyToISP2)
	if _, err := dm.stop(); err != nil {
		t.Fatalf("flowpin run with the sticky rule's link down: %v\n%s", err, dm.logs())
	}
	if strings.Contains(dm.logs(), "sync failed") {
		t.Errorf("flowpin run could not sync:\n%s", dm.logs())
	}

	linkUp(t, d.Router, "wan2")
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil || strings.Contains(out, "left out") {
		t.Fatalf("apply with wan2 back: %v\n%s", err, out)
	}
	for i := range 5 {
		if err := udpQuery(d.LAN, d.Service+":53"); err != nil {
			t.Fatalf("query %d by the sticky rule with wan2 back: %v", i, err)
		}
	}
	if a, b := onLinks(d, dnsSrv.Sources()); a != 0 || b != 5 {
		t.Errorf("the sticky rule's flows with wan2 back: %d/%d on isp1/isp2, want 0/5", a, b)
	}
}

// The daemon runs with the sticky rule; isp2 dies silently. Every sync
// succeeds, isp2 leaves the multipath route, and new flows no rule
// matches all succeed by isp1 within the failover time of the checks,
// as they do without the rule (the control, in the same run).
func TestStickyRuleLinkDiesSilently(t *testing.T) {
	for _, tc := range []struct{ name, rules string }{
		{"with the sticky rule", stickyToISP2},
		{"control, no rule", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDualWAN(t)
			srv := startEchoServer(t, d.Far, d.Service+":0")
			target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
			dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2)+tc.rules)
			dm.waitState(t, "isp2", "up", 5*time.Second)
			untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)
			if before := run(t, d.Router, "ip", "route", "show", "table", "100"); !strings.Contains(before, "wan2") {
				t.Fatalf("isp2 not in the multipath route before the outage:\n%s", before)
			}

			start := time.Now()
			blackhole(t, d.ISP2)
			// The route first: the new flows below may all succeed a little
			// earlier, once the kernel itself skips wan2's gateway as its
			// neighbour entry fails (fib_multipath_use_neigh).
			var left time.Duration
			for {
				if !strings.Contains(run(t, d.Router, "ip", "route", "show", "table", "100"), "wan2") {
					left = time.Since(start)
					break
				}
				if time.Since(start) > 6*time.Second {
					t.Fatalf("the dead link is still in the multipath route 6 s after it died:\n%s", dm.logs())
				}
				time.Sleep(20 * time.Millisecond)
			}
			took := untilAllSucceed(t, d, srv, start, 6*time.Second)
			t.Logf("isp2 died silently: out of the multipath route after %v, new unmatched flows all succeed after %v (checks 300ms x 3)",
				left.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
			if left > 4*time.Second {
				t.Errorf("failover took %v, want about 1.5 s", left)
			}
			dm.waitState(t, "isp2", "down", 2*time.Second)
			srv.Reset()
			r := connectN(t, d.LAN, target, srv, 40, dialOpts{})
			if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 40 || b != 0 {
				t.Errorf("after the failover: %d/%d on isp1/isp2, %d failed; want 40/0/0", a, b, r.Failed)
			}
			if strings.Contains(dm.logs(), "sync failed") {
				t.Errorf("a sync failed:\n%s", dm.logs())
			}
		})
	}
}

// rulesFragment is a config's traffic rules: n TCP rules alternating
// between isp1 (even) and isp2 (odd). Disjoint: rule i takes port
// 2000+i. Overlapping: rule i takes ports 20000-i .. 20000+i, so every
// rule overlaps every other, and the first rule that matches port
// 20000+k is rule k.
func rulesFragment(n int, overlapping bool) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		ports := fmt.Sprint(2000 + i)
		if overlapping {
			ports = fmt.Sprintf(`"%d-%d"`, 20000-i, 20000+i)
		}
		fmt.Fprintf(&b, "  - {name: r%d, proto: tcp, dst_ports: [%s], policy: isp%d}\n", i, ports, 1+i%2)
	}
	return b.String()
}

// The README's 1000 rules apply, in one transaction, and so do 200, and
// 1000, that all overlap one another, each set in place of the last; flows are classified by the
// rule that matches them first, wherever it stands in the list, and a
// second apply writes nothing. The apply of the links alone, in the
// same run, is the control.
func TestLargeRuleSets(t *testing.T) {
	d := newDualWAN(t)
	for _, tc := range []struct {
		name  string
		frag  string
		ports map[int]int // port -> the link its flows must take (1, 2)
	}{
		{"control, no rules", "", nil},
		{"1000 rules", rulesFragment(1000, false), map[int]int{2000: 1, 2001: 2, 2500: 1, 2998: 1, 2999: 2}},
		{"200 overlapping rules", rulesFragment(200, true), map[int]int{20000: 1, 20001: 2, 19850: 1, 20150: 1, 20199: 2}},
		{"1000 overlapping rules", rulesFragment(1000, true), map[int]int{20000: 1, 20001: 2, 19500: 1, 20998: 1, 20999: 2}},
	} {
		cfg := writeFile(t, "flowpin.yaml", d.config(1, 1)+tc.frag)
		start := time.Now()
		out, err := flowpin(t, d.Router, "apply", "-c", cfg)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: apply: %v\n%s", tc.name, err, out)
		}
		t.Logf("%s: flowpin apply took %v: %s", tc.name, took.Round(time.Millisecond), strings.TrimSpace(out))
		classified := 0
		for port, link := range tc.ports {
			srv := startEchoServer(t, d.Far, fmt.Sprintf("%s:%d", d.Service, port))
			r := connectN(t, d.LAN, fmt.Sprintf("%s:%d", d.Service, port), srv, 10, dialOpts{})
			a, b := onLinks(d, r.PerSource)
			if want := [2]int{10 * (2 - link), 10 * (link - 1)}; r.Failed != 0 || [2]int{a, b} != want {
				t.Errorf("%s: port %d: %d/%d on isp1/isp2, %d failed; want %d/%d (its first rule's link, isp%d)", tc.name, port, a, b, r.Failed, want[0], want[1], link)
				continue
			}
			classified += 10
			srv.close()
		}
		if tc.ports == nil {
			// Each apply below starts from no table, but the last, which
			// replaces the one before it.
			if out, err := flowpin(t, d.Router, "down"); err != nil {
				t.Fatalf("down: %v\n%s", err, out)
			}
			continue
		}
		t.Logf("%s: %d flows to %d ports, each on its rule's link", tc.name, classified, len(tc.ports))
		start = time.Now()
		out, err = flowpin(t, d.Router, "apply", "-c", cfg)
		if err != nil || kernelWrites(t, out) != 0 {
			t.Errorf("%s: second apply: %v, want no kernel writes:\n%s", tc.name, err, out)
		}
		t.Logf("%s: second apply (nothing to write) took %v", tc.name, time.Since(start).Round(time.Millisecond))
	}
}

// Right after a clean apply with a backup (tier 2) link, apply counts
// only the active tier in the multipath route, verify passes, and new
// flows take isp1 alone; a foreign route in a policy's table fails
// verify as it would stop apply.
func TestVerifyAfterApplyWithBackupTier(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	cfg := writeFile(t, "flowpin.yaml", checkedLinks(d, d.GW2, 2, fastCheck(d), fastCheck(d))+`policies:
  - {name: isp1-only, tiers: [[isp1]]}
rules:
  - {name: web, proto: tcp, dst_ports: [8443], policy: isp1-only}
`)
	out, err := flowpin(t, d.Router, "apply", "-c", cfg)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	t.Logf("apply: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "applied: 1 of 2 links in the multipath route (on standby in a lower tier: isp2)") {
		t.Errorf("apply's summary does not count the multipath route:\n%s", out)
	}
	vout := verifyOK(t, d.Router, cfg, "right after apply with a tier-2 link")
	for _, l := range strings.Split(vout, "\n") {
		if strings.Contains(l, "new flows") {
			t.Logf("verify: %s", strings.TrimSpace(l))
		}
	}
	r := connectN(t, d.LAN, target, srv, 30, dialOpts{})
	if a, b := onLinks(d, r.PerSource); r.Failed != 0 || a != 30 || b != 0 {
		t.Errorf("new flows: %d/%d on isp1/isp2, %d failed; want 30/0/0 (isp2 on standby)", a, b, r.Failed)
	}

	policyTable := "103" // the first table above the links' (100 balance, 101 and 102 the links)
	if rt := run(t, d.Router, "ip", "route", "show", "table", policyTable); !strings.Contains(rt, "wan1") {
		t.Fatalf("table %s is not policy isp1-only's:\n%s", policyTable, rt)
	}
	run(t, d.Router, "ip", "route", "add", "203.0.113.0/24", "via", d.GW2, "dev", "wan2", "table", policyTable)
	verifyFails(t, d.Router, cfg, "a foreign route in a policy's table", "table "+policyTable+" (policy isp1-only): holds a route flowpin does not own")
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err == nil || !strings.Contains(out, "table "+policyTable) {
		t.Errorf("apply with a foreign route in the policy's table: %v, want refused naming the table:\n%s", err, out)
	}
}
