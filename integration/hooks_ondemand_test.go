package integration

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOnDemandNotBehindHangingHook: the backup isp2 (tier 2, on demand)
// goes to standby at start; its on_change hook for that hangs (timeout
// 40 s). When the primary then dies, the backup's up command runs at once
// anyway: the outage until new flows succeed over the backup is that of
// the failover and the dial, not the hook's timeout. The primary's own
// hook leaves a child in the background that keeps its stderr open; it
// exits 0 and is logged as done, not failed.
func TestOnDemandNotBehindHangingHook(t *testing.T) {
	d := newDualWAN(t)
	dir := t.TempDir()
	marker := fmt.Sprintf("sleep %d.75", 4000+time.Now().UnixNano()%1000)
	hook := filepath.Join(dir, "hook.sh")
	script := fmt.Sprintf(`#!/bin/sh
if [ "$FLOWPIN_LINK" = isp2 ] && [ "$FLOWPIN_STATE" = down ]; then %s; fi
if [ "$FLOWPIN_LINK" = isp1 ]; then
	sleep 20 &
	echo $! > %s/bg.pid
	echo "watchdog restarted" >&2
fi
exit 0
`, marker, dir)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "bg.pid")); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	cfg := policyLinks(d, 2, fmt.Sprintf(`    on_demand:
      up: "touch %s/up-ran; ip link set wan2 up"
      down: "ip link set wan2 down"
      keep: 1s
hooks:
  on_change: %s
  timeout: 40s
`, dir, hook))
	dm := startDaemon(t, d.Router, cfg)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := hostPort(d.Service, srv.Port())

	// isp2 was up at start and is not needed: after keep it goes to
	// standby (its interface down), and its hook hangs.
	dm.waitState(t, "isp2", "standby", 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for hangingPID(t, marker) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("isp2's hook does not hang:\n%s", dm.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	start := time.Now()
	restore := blackhole(t, d.ISP1)
	defer restore()
	took := untilAllSucceed(t, d, srv, start, 15*time.Second)
	hanging := hangingPID(t, marker) != ""
	t.Logf("primary dead -> new flows succeed over the backup in %v, while isp2's hook hangs (timeout 40 s): %v", took.Round(time.Millisecond), hanging)
	if !hanging {
		t.Error("isp2's hook no longer hangs: the test proves nothing")
	}
	if took > 10*time.Second {
		t.Errorf("outage %v: the backup waited for the hook", took)
	}
	if _, err := os.Stat(filepath.Join(dir, "up-ran")); err != nil {
		t.Error("the up command did not run")
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 20, dialOpts{}); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN2)] != 20 {
		t.Errorf("over the backup: %d failed, %v", r.Failed, r.PerSource)
	}

	// The primary's hook exited 0 with its child still holding stderr.
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(dm.logs(), `msg="on_change hook done" queue=isp1`) {
		if time.Now().After(deadline) {
			t.Fatalf("isp1's hook not logged as done:\n%s", dm.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	logs := dm.logs()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `queue=isp1`) {
			t.Logf("isp1's hook, its child holding stderr: %s", line[strings.Index(line, "msg="):])
		}
	}
	if strings.Contains(logs, `msg="on_change hook failed" queue=isp1`) || strings.Contains(logs, "WaitDelay") {
		t.Errorf("isp1's hook, which exited 0, is logged as failed:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(dir, "bg.pid")); err != nil {
		t.Error("isp1's hook did not leave its child")
	}
}
