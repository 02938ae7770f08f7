package integration

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// weightedConfig is checkedConfig with the given weights.
func weightedConfig(d *dualWAN, w1, w2 int) string {
	c := checkedConfig(d, d.GW2)
	c = strings.Replace(c, "weight: 1", fmt.Sprintf("weight: %d", w1), 1)
	i := strings.Index(c, "name: isp2")
	return c[:i] + strings.Replace(c[i:], "weight: 1", fmt.Sprintf("weight: %d", w2), 1)
}

// reload rewrites the daemon's config file and reloads it, by SIGHUP or
// by `flowpin reload`, and waits for the outcome in the log. It returns
// reload's output (by command) or the log line (by signal).
func (dm *daemon) reload(t testing.TB, cfg string, bySignal bool) (string, error) {
	t.Helper()
	if err := os.WriteFile(dm.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n := strings.Count(dm.logs(), "reloading the config")
	if !bySignal {
		return flowpin(t, dm.ns, "reload")
	}
	if err := dm.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs := dm.logs()
		if strings.Count(logs, "reloading the config") > n {
			tail := logs[strings.LastIndex(logs, "reloading the config"):]
			if strings.Contains(tail, "reloaded the config") {
				return tail, nil
			}
			if i := strings.Index(tail, "reload refused"); i >= 0 {
				return tail, fmt.Errorf("refused: %s", strings.SplitN(tail[i:], "\n", 2)[0])
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no outcome of the reload in the log:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// kernelState is snapshot without the counters, which probes move.
func kernelState(t testing.TB, ns string) string {
	return nftCounters.ReplaceAllString(snapshot(t, ns), "counter")
}

func testReloadReweight(t *testing.T, bySignal bool) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	wan1, wan2 := netip.MustParseAddr(d.WAN1), netip.MustParseAddr(d.WAN2)
	dm := startDaemon(t, d.Router, weightedConfig(d, 1, 1), "--metrics", ":9108")
	held := startLongLived(t, d.LAN, target, srv, 30, dialOpts{})
	time.Sleep(300 * time.Millisecond)
	metric := func(name string) float64 {
		t.Helper()
		body, err := scrape(t, d.Router, "127.0.0.1:9108")
		if err != nil {
			t.Fatal(err)
		}
		return sumMetric(body, name)
	}
	syncs := metric("flowpin_syncs_total")

	// Re-weight: nearly everything new to isp1.
	if out, err := dm.reload(t, weightedConfig(d, 255, 1), bySignal); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	// The metrics go on: the reloaded daemon's first sync adds to the count.
	if after := metric("flowpin_syncs_total"); after <= syncs {
		t.Errorf("flowpin_syncs_total %v before the reload, %v after: the counters started again", syncs, after)
	}
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 60, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d of 60 new connections failed after the reload: %v", r.Failed, r.Errors[0])
	}
	t.Logf("after re-weighting 255:1: %v", r.PerSource)
	// P(isp2) = 1/256 per flow: 60 flows put more than 3 there about once
	// in 10^5 runs.
	if r.PerSource[wan1] < 57 {
		t.Errorf("new flows did not follow the new weights: %v", r.PerSource)
	}
	time.Sleep(500 * time.Millisecond)
	var onBoth [2]int
	for i, s := range held.stop() {
		if s.Stalled || s.Err != nil || s.Echoes < 10 {
			t.Errorf("held connection %d (by %v) broke in the reload: stalled=%v err=%v echoes=%d", i, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes)
		}
		if s.Remote.Addr() == wan2 {
			onBoth[1]++
		} else {
			onBoth[0]++
		}
	}
	if onBoth[0] == 0 || onBoth[1] == 0 {
		t.Errorf("held flows were %v on isp1/isp2; the test needs both", onBoth)
	}

	// A broken config is refused: the daemon lives, the kernel is as it was.
	before := kernelState(t, d.Router)
	bad := strings.Replace(weightedConfig(d, 255, 1), "weight: 1\n", "weight: 1000\n", 1)
	out, err := dm.reload(t, bad, bySignal)
	if err == nil {
		t.Fatalf("a weight of 1000 was accepted:\n%s", out)
	}
	if !strings.Contains(out, "run.yaml:11: links[1].weight: 1000 is out of range") {
		t.Errorf("the refusal does not name file, line, field and value:\n%s", out)
	}
	if after := kernelState(t, d.Router); after != before {
		t.Errorf("the refused reload changed the kernel:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if st := dm.linkStates(t); st["isp1"].State != "up" || st["isp2"].State != "up" {
		t.Errorf("after the refused reload: %+v", st)
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 20, dialOpts{}); r.Failed != 0 || r.PerSource[wan1] < 18 {
		t.Errorf("after the refused reload (old config 255:1): %d failed, %v", r.Failed, r.PerSource)
	}

	// Removing isp2: its kernel state is gone, its flows are deleted (they
	// reconnect by isp1), isp1's flows survive.
	if out, err := dm.reload(t, weightedConfig(d, 1, 1), bySignal); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	srv.Reset()
	held = startLongLived(t, d.LAN, target, srv, 30, dialOpts{})
	heldOnISP1, heldOnISP2 := 0, 0
	time.Sleep(300 * time.Millisecond)
	if ct := run(t, d.Router, "conntrack", "-L", "-m", "0x200/0xff00"); !strings.Contains(ct, "tcp") {
		t.Errorf("no flow on isp2 before removing it:\n%s", ct)
	}
	onlyISP1 := weightedConfig(d, 255, 1)
	onlyISP1 = onlyISP1[:strings.Index(onlyISP1, "  - name: isp2")]
	if out, err := dm.reload(t, onlyISP1, bySignal); err != nil {
		t.Fatalf("reload without isp2: %v\n%s", err, out)
	}
	state := kernelState(t, d.Router)
	for _, gone := range []string{"198.51.100.1", "0x00000200"} {
		if strings.Contains(state, gone) {
			t.Errorf("%s is still in the kernel after isp2 was removed", gone)
		}
	}
	if strings.Contains(run(t, d.Router, "ip", "rule", "show"), "0x200/") {
		t.Errorf("isp2's ip rule is left:\n%s", run(t, d.Router, "ip", "rule", "show"))
	}
	if strings.Contains(run(t, d.Router, "nft", "list", "table", "inet", "flowpin"), `"wan2"`) {
		t.Errorf("isp2's nft rules are left:\n%s", run(t, d.Router, "nft", "list", "table", "inet", "flowpin"))
	}
	if ct := run(t, d.Router, "conntrack", "-L", "-m", "0x200/0xff00"); strings.Contains(ct, "tcp") {
		t.Errorf("isp2's flows are left in conntrack:\n%s", ct)
	}
	time.Sleep(500 * time.Millisecond)
	for i, s := range held.stop() {
		if s.Remote.Addr() != wan1 {
			heldOnISP2++
			continue
		}
		heldOnISP1++
		if s.Stalled || s.Err != nil {
			t.Errorf("held connection %d on isp1 broke when isp2 was removed: stalled=%v err=%v", i, s.Stalled, s.Err)
		}
	}
	if heldOnISP1 == 0 || heldOnISP2 == 0 {
		t.Errorf("held flows were %d/%d on isp1/isp2; the test needs both", heldOnISP1, heldOnISP2)
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 20, dialOpts{}); r.Failed != 0 || r.PerSource[wan1] != 20 {
		t.Errorf("after removing isp2: %d failed, %v", r.Failed, r.PerSource)
	}
	if st := dm.linkStates(t); len(st) != 1 || st["isp1"].State != "up" {
		t.Errorf("after removing isp2, status: %+v", st)
	}
	if body, err := scrape(t, d.Router, "127.0.0.1:9108"); err != nil || strings.Contains(body, `link="isp2"`) {
		t.Errorf("after removing isp2, /metrics still has its series (err %v):\n%s", err, body)
	}
}

func TestReloadBySIGHUP(t *testing.T)  { requireRoot(t); testReloadReweight(t, true) }
func TestReloadByCommand(t *testing.T) { requireRoot(t); testReloadReweight(t, false) }
