package health

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"flowpin/lb/config"
)

func execLink(cmd string) config.Link {
	return config.Link{Name: "isp1", Interface: "wan1", Mark: 0x100, Check: config.HealthCheck{Method: config.ProbeExec, Command: cmd}}
}

func execProbe(t *testing.T, cmd string, timeout time.Duration) (Round, time.Duration) {
	t.Helper()
	p, err := NewExecProber(execLink(cmd), false)
	if err != nil {
		t.Fatal(err)
	}
	p.SetGateway(netip.MustParseAddr("192.0.2.1"))
	start := time.Now()
	r := p.Probe([]netip.Addr{netip.MustParseAddr("192.0.2.1")}, timeout)
	return r, time.Since(start)
}

func TestExecProbe(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, cmd string
		good      bool
		err       string // the start of the round's error
	}{
		{"exit 0", "true", true, ""},
		{"exit 1 with its output", "echo 'gateway says no'; exit 1", false, "command exited 1: gateway says no"},
		{"no such command", "/nonexistent/check-wan", false, "command exited 127: "},
		{"megabytes of output", "head -c 5000000 /dev/zero | tr '\\0' x; exit 3", false, "command exited 3: xxxxxxxx"},
		{"the environment", `test "$FLOWPIN_LINK $FLOWPIN_INTERFACE $FLOWPIN_MARK $FLOWPIN_FAMILY $FLOWPIN_GATEWAY $FLOWPIN_TARGETS $FLOWPIN_TIMEOUT_MS" = "isp1 wan1 0x100 ipv4 192.0.2.1 192.0.2.1 3000"`, true, ""},
		{"a file the check looks at", "test -e " + filepath.Join(dir, "absent"), false, "command exited 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, took := execProbe(t, tc.cmd, 3*time.Second)
			if r.Good(1) != tc.good || r.Sent != 1 {
				t.Fatalf("round %+v", r)
			}
			if tc.err != "" && (r.Err == nil || !strings.HasPrefix(r.Err.Error(), tc.err)) {
				t.Errorf("err %v, want %q...", r.Err, tc.err)
			}
			if r.Err != nil && len(r.Err.Error()) > 300 {
				t.Errorf("err of %d bytes", len(r.Err.Error()))
			}
			t.Logf("%s: %v in %v", tc.name, r.Err, took)
		})
	}
}

// alive says whether pid runs (a zombie does not count: it is gone but
// for its parent's wait).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// A command that hangs is killed at the timeout with its whole group, a
// child holding the output pipe included, and the round fails then, not
// when the child would have ended.
func TestExecProbeHangs(t *testing.T) {
	pidf := filepath.Join(t.TempDir(), "pid")
	r, took := execProbe(t, "sleep 60 & echo $! > "+pidf+"; sleep 60", 300*time.Millisecond)
	if r.Good(1) || r.Err == nil || r.Err.Error() != "command timed out after 300ms" {
		t.Fatalf("round %+v", r)
	}
	if took > 2*time.Second {
		t.Errorf("the probe took %v with a timeout of 300ms", took)
	}
	t.Logf("a hanging command's round ended after %v (timeout 300ms)", took)
	pid := readPid(t, pidf)
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(pid) {
		t.Errorf("its child %d still runs", pid)
	}
}

// A command that answers but leaves a child running: the round is an
// answer at once, and the child does not outlive it (one per round would
// pile up).
func TestExecProbeForks(t *testing.T) {
	pidf := filepath.Join(t.TempDir(), "pid")
	r, took := execProbe(t, "sleep 60 & echo $! > "+pidf+"; exit 0", 5*time.Second)
	if !r.Good(1) {
		t.Fatalf("round %+v", r)
	}
	if took > 2*time.Second {
		t.Errorf("the probe waited %v for the child", took)
	}
	pid := readPid(t, pidf)
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(pid) {
		t.Errorf("its child %d still runs", pid)
	}
}

// A child that leaves the group (setsid) cannot be killed with it, and
// holds the output pipe: the round still ends when the command does.
func TestExecProbeEscapedChild(t *testing.T) {
	pidf := filepath.Join(t.TempDir(), "pid")
	r, took := execProbe(t, "setsid sh -c 'echo $$ > "+pidf+"; exec sleep 60' & sleep 0.2; exit 0", 5*time.Second)
	pid := readPid(t, pidf)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if !r.Good(1) {
		t.Fatalf("round %+v", r)
	}
	if took > 2*time.Second {
		t.Errorf("the probe waited %v for a child outside its group", took)
	}
	t.Logf("a command whose child left its group: round over in %v", took)
}
