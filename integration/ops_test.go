package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readEnv reads a file of NAME=VALUE lines the hook wrote, waiting for it.
func readEnv(t testing.TB, path string, limit time.Duration) map[string]string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		data, err := os.ReadFile(path)
		if err == nil && strings.HasSuffix(string(data), "END\n") {
			env := map[string]string{}
			for _, line := range strings.Split(string(data), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = v
				}
			}
			return env
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hook did not write %s within %v", filepath.Base(path), limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hangingPID finds the hook's hanging sleep by its unique command line
// ("": none). pgrep only reads /proc.
func hangingPID(t testing.TB, marker string) string {
	out, _ := exec.Command("pgrep", "-f", "^"+marker+"$").Output()
	return strings.TrimSpace(string(out))
}

// TestHookEnvAndTimeout: the on_change hook gets the link, interface,
// state, reason, up links and the default policy's tier on down and on
// up. Its down run hangs: failover happens meanwhile at the usual speed,
// and the hook is killed at its timeout.
func TestHookEnvAndTimeout(t *testing.T) {
	requireRoot(t)
	d := newDualWAN(t)
	dir := t.TempDir()
	marker := fmt.Sprintf("sleep %d.25", 3000+time.Now().UnixNano()%1000)
	hook := filepath.Join(dir, "hook.sh")
	script := fmt.Sprintf(`#!/bin/sh
{ env | grep '^FLOWPIN_' | sort; echo END; } > %s/$FLOWPIN_LINK-$FLOWPIN_STATE.env
if [ "$FLOWPIN_STATE" = down ]; then %s; fi
`, dir, marker)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := checkedConfig(d, d.GW2) + fmt.Sprintf("hooks:\n  on_change: %s\n  timeout: 3s\n", hook)
	dm := startDaemon(t, d.Router, cfg)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())

	start := time.Now()
	restore := blackhole(t, d.ISP2)
	dm.waitState(t, "isp2", "down", 5*time.Second)
	down := readEnv(t, filepath.Join(dir, "isp2-down.env"), 5*time.Second)
	hookAt := time.Now()
	// The hook hangs now; new flows must not wait for it.
	r := connectN(t, d.LAN, target, srv, 16, dialOpts{Timeout: time.Second, Parallel: 16})
	pid := hangingPID(t, marker)
	t.Logf("isp2 down %v after the outage; 16 new flows: %d failed, %v; hook pid %q", hookAt.Sub(start).Round(time.Millisecond), r.Failed, r.PerSource, pid)
	if r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1)] != 16 {
		t.Errorf("new flows while the hook hangs: %d failed, %v", r.Failed, r.PerSource)
	}
	if pid == "" {
		t.Error("the hanging hook was not running while failover was done")
	}
	want := map[string]string{
		"FLOWPIN_LINK": "isp2", "FLOWPIN_INTERFACE": "wan2", "FLOWPIN_FAMILY": "ipv4", "FLOWPIN_STATE": "down",
		"FLOWPIN_UP_LINKS": "isp1", "FLOWPIN_POLICY_DEFAULT_TIER": "1",
	}
	for k, v := range want {
		if down[k] != v {
			t.Errorf("down: %s=%q, want %q (env %v)", k, down[k], v, down)
		}
	}
	if !strings.HasPrefix(down["FLOWPIN_REASON"], "down: ") {
		t.Errorf("down: FLOWPIN_REASON=%q", down["FLOWPIN_REASON"])
	}

	// Killed at its 3s timeout.
	deadline := time.Now().Add(6 * time.Second)
	for hangingPID(t, marker) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the hanging hook still runs %v after it started", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline = time.Now().Add(2 * time.Second)
	for !strings.Contains(dm.logs(), "killed after the timeout of 3s") {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the kill:\n%s", dm.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}

	restore()
	up := readEnv(t, filepath.Join(dir, "isp2-up.env"), 10*time.Second)
	want["FLOWPIN_STATE"], want["FLOWPIN_UP_LINKS"] = "up", "isp1,isp2"
	for k, v := range want {
		if up[k] != v {
			t.Errorf("up: %s=%q, want %q (env %v)", k, up[k], v, up)
		}
	}
	if !strings.HasPrefix(up["FLOWPIN_REASON"], "up: ") {
		t.Errorf("up: FLOWPIN_REASON=%q", up["FLOWPIN_REASON"])
	}
}

func operstate(t testing.TB, ns, dev string) string {
	out := run(t, ns, "cat", "/sys/class/net/"+dev+"/operstate")
	return strings.TrimSpace(out)
}

// TestOnDemandBackup: the backup (tier 2, on demand) stays down while the
// primary is up; when the primary dies its up command runs and new flows
// succeed over it; when the primary is back for keep, the backup's flows
// are deleted and its down command runs.
func TestOnDemandBackup(t *testing.T) {
	requireRoot(t)
	d := newDualWAN(t)
	run(t, d.Router, "ip", "link", "set", "wan2", "down")
	dir := t.TempDir()
	// isp2 is the last link: its on_demand follows.
	cfg := policyLinks(d, 2, fmt.Sprintf(`    on_demand:
      up: "touch %s/up-ran; ip link set wan2 up"
      down: "touch %s/down-ran; ip link set wan2 down"
      keep: 2s
`, dir, dir))
	dm := startDaemon(t, d.Router, cfg)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	wan2 := netip.MustParseAddr(d.WAN2)

	time.Sleep(time.Second)
	if s := operstate(t, d.Router, "wan2"); s != "down" {
		t.Errorf("wan2 is %s while the primary is up", s)
	}
	if st := dm.linkStates(t)["isp2"]; st.State != "standby" {
		t.Errorf("isp2 while the primary is up: %+v, want standby", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "up-ran")); err == nil {
		t.Error("the up command ran while the primary was up")
	}

	start := time.Now()
	restore := blackhole(t, d.ISP1)
	took := untilAllSucceed(t, d, srv, start, 15*time.Second)
	t.Logf("primary dead -> new flows succeed over the backup in %v", took.Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(dir, "up-ran")); err != nil {
		t.Error("the up command did not run")
	}
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 20, dialOpts{})
	if r.Failed != 0 || r.PerSource[wan2] != 20 {
		t.Errorf("over the backup: %d failed, %v", r.Failed, r.PerSource)
	}
	held := startLongLived(t, d.LAN, target, srv, 5, dialOpts{})

	restore()
	dm.waitState(t, "isp1", "up", 10*time.Second)
	back := time.Now()
	time.Sleep(time.Second)
	if _, err := os.Stat(filepath.Join(dir, "down-ran")); err == nil {
		t.Errorf("the down command ran %v after the primary came back, before keep (2s)", time.Since(back))
	}
	dm.waitState(t, "isp2", "standby", 10*time.Second)
	t.Logf("backup standby %v after the primary came back (keep 2s)", time.Since(back).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(dir, "down-ran")); err != nil {
		t.Error("the down command did not run")
	}
	if ct := run(t, d.Router, "conntrack", "-L", "-m", "0x200/0xff00"); strings.Contains(ct, "tcp") {
		t.Errorf("the backup's flows are left:\n%s", ct)
	}
	for i, s := range held.stop() {
		if s.Remote.Addr() != wan2 {
			t.Errorf("held connection %d went by %v", i, s.Remote.Addr())
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for operstate(t, d.Router, "wan2") != "down" {
		if time.Now().After(deadline) {
			t.Fatalf("wan2 is %s after the down command", operstate(t, d.Router, "wan2"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 20, dialOpts{}); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1)] != 20 {
		t.Errorf("back on the primary: %d failed, %v", r.Failed, r.PerSource)
	}
}
