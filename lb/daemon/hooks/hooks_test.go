package hooks

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// One queue runs its jobs one at a time in order, even when the first is
// the slowest; another queue does not wait for it.
func TestHookRunnerOrderPerQueue(t *testing.T) {
	r := NewRunner(5*time.Second, quietLog())
	defer r.Stop()
	out := filepath.Join(t.TempDir(), "out")
	var mu sync.Mutex
	var order []string
	done := make(chan struct{}, 10)
	job := func(q, name, sleep string) Job {
		return Job{Queue: q, What: "test", Argv: []string{"/bin/sh", "-c", "sleep " + sleep + "; echo " + name + " >> " + out},
			Done: func(error) { mu.Lock(); order = append(order, name); mu.Unlock(); done <- struct{}{} }}
	}
	r.Submit(job("a", "a1", "1"))
	r.Submit(job("a", "a2", "0"))
	r.Submit(job("a", "a3", "0"))
	r.Submit(job("b", "b1", "0"))
	for range 4 {
		<-done
	}
	data, _ := os.ReadFile(out)
	var a []string
	for _, l := range strings.Fields(string(data)) {
		if strings.HasPrefix(l, "a") {
			a = append(a, l)
		}
	}
	if !slices.Equal(a, []string{"a1", "a2", "a3"}) {
		t.Errorf("queue a ran %v, want a1 a2 a3", a)
	}
	if order[0] != "b1" {
		t.Errorf("b1 waited for queue a: done order %v", order)
	}
}

// A job past its timeout is killed with its process group: a child the
// script started in the background dies too.
func TestHookRunnerTimeoutKillsGroup(t *testing.T) {
	r := NewRunner(300*time.Millisecond, quietLog())
	defer r.Stop()
	pidFile := filepath.Join(t.TempDir(), "pid")
	errc := make(chan error, 1)
	start := time.Now()
	r.Submit(Job{Queue: "a", What: "test", Argv: []string{"/bin/sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"},
		Done: func(err error) { errc <- err }})
	err := <-errc
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v to kill", took)
	}
	if err == nil || !strings.Contains(err.Error(), "killed after the timeout of 300ms") {
		t.Errorf("err = %v", err)
	}
	data, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	var pid int
	for _, c := range strings.TrimSpace(string(data)) {
		pid = pid*10 + int(c-'0')
	}
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("background child %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A failure is logged with its exit code and the tail of stderr.
func TestHookRunnerLogsFailure(t *testing.T) {
	var buf syncBuf
	r := NewRunner(5*time.Second, slog.New(slog.NewTextHandler(&buf, nil)))
	errc := make(chan error, 1)
	r.Submit(Job{Queue: "a", What: "on_change hook", Argv: []string{"/bin/sh", "-c", "echo early >&2; echo 'vpn restart failed' >&2; exit 3"},
		Done: func(err error) { errc <- err }})
	if err := <-errc; err == nil {
		t.Fatal("no error")
	}
	r.Stop()
	got := buf.String()
	for _, want := range []string{`msg="on_change hook failed"`, "exit_code=3", `stderr="early\nvpn restart failed"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s:\n%s", want, got)
		}
	}
}

// Stop kills a running job and drops the waiting ones.
func TestHookRunnerStop(t *testing.T) {
	r := NewRunner(time.Minute, quietLog())
	ran := make(chan string, 2)
	started := filepath.Join(t.TempDir(), "started")
	r.Submit(Job{Queue: "a", What: "t", Argv: []string{"/bin/sh", "-c", "touch " + started + "; sleep 60"}, Done: func(error) { ran <- "first" }})
	r.Submit(Job{Queue: "a", What: "t", Argv: []string{"/bin/true"}, Done: func(error) { ran <- "second" }})
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	r.Stop()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stop took %v", took)
	}
	close(ran)
	var got []string
	for s := range ran {
		got = append(got, s)
	}
	if !slices.Equal(got, []string{"first"}) {
		t.Errorf("ran %v, want only the first (killed)", got)
	}
	r.Submit(Job{Queue: "a", Argv: []string{"/bin/true"}, Done: func(error) { t.Error("ran after stop") }})
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A hook that exits while a child it left in the background still holds
// its stderr: the hook's outcome is its exit status, known at once, and
// what it wrote to stderr before it exited is kept.
// The hook of a change sees the tiers and the up links it is given.
func TestEnv(t *testing.T) {
	c := &config.Config{
		Links: []config.Link{
			{Name: "isp1", Interface: "wan1", GatewayAuto: true},
			{Name: "lte", Interface: "wwan0", GatewayAuto: true, Tier: 2},
		},
	}
	policies := []plan.PolicyPlan{
		{Policy: config.Policy{Name: "default"}, Active: 1, Active6: -1},
		{Policy: config.Policy{Name: "cable-first"}, Active: 0, Active6: -1},
	}
	j := OnChange("/bin/true", Change{Link: c.Links[0], State: health.StateDown, Reason: "down: carrier lost on wan1"}, []string{"lte"}, policies)
	want := []string{
		"FLOWPIN_LINK=isp1", "FLOWPIN_INTERFACE=wan1", "FLOWPIN_FAMILY=ipv4", "FLOWPIN_STATE=down",
		"FLOWPIN_REASON=down: carrier lost on wan1", "FLOWPIN_CAUSE=health", "FLOWPIN_UP_LINKS=lte",
		"FLOWPIN_POLICY_DEFAULT_TIER=2", "FLOWPIN_POLICY_DEFAULT_TIER6=none",
		"FLOWPIN_POLICY_CABLE_FIRST_TIER=1", "FLOWPIN_POLICY_CABLE_FIRST_TIER6=none",
	}
	if !slices.Equal(j.Env, want) || j.Queue != "isp1" || !slices.Equal(j.Argv, []string{"/bin/true"}) {
		t.Errorf("job %+v\nenv\n got %q\nwant %q", j, j.Env, want)
	}
	v6 := Env(Change{Link: c.Links[1], V6: true, State: health.StateUp, Reason: "up"}, nil, nil)
	if !slices.Contains(v6, "FLOWPIN_FAMILY=ipv6") || !slices.Contains(v6, "FLOWPIN_UP_LINKS=") {
		t.Errorf("IPv6 env %q", v6)
	}
}

// Changes wait in order until taken; a copy does not take them.
func TestPending(t *testing.T) {
	var p Pending
	p.Add(Change{Reason: "a"})
	p.Add(Change{Reason: "b"})
	if l := p.List(); len(l) != 2 || l[0].Reason != "a" {
		t.Fatalf("list %+v", l)
	}
	if got := p.Take(); len(got) != 2 || got[1].Reason != "b" {
		t.Fatalf("take %+v", got)
	}
	if got := p.Take(); len(got) != 0 {
		t.Fatalf("taken twice: %+v", got)
	}
}

func TestHookRunnerBackgroundChildHoldsStderr(t *testing.T) {
	var buf syncBuf
	r := NewRunner(time.Minute, slog.New(slog.NewTextHandler(&buf, nil)))
	defer r.Stop()
	dir := t.TempDir()
	bg := func(name string) string {
		// The child keeps the hook's stderr for 30 s.
		return "sleep 30 & echo $! > " + filepath.Join(dir, name) + "; "
	}
	t.Cleanup(func() {
		for _, name := range []string{"ok", "fail"} {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				var pid int
				if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})
	errc := make(chan error, 2)
	r.Submit(Job{Queue: "a", What: "on_change hook", Argv: []string{"/bin/sh", "-c", bg("ok") + "echo restarted >&2; exit 0"},
		Done: func(err error) { errc <- err }})
	r.Submit(Job{Queue: "a", What: "on_change hook", Argv: []string{"/bin/sh", "-c", bg("fail") + "echo 'vpn down' >&2; exit 3"},
		Done: func(err error) { errc <- err }})
	start := time.Now()
	if err := <-errc; err != nil {
		t.Errorf("a hook that exited 0 reported %v", err)
	}
	var ee *exec.ExitError
	if err := <-errc; !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("a hook that exited 3: %v", err)
	}
	// Both ran, one after the other, while the first one's child lives on.
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the queue waited %v for the background children", took)
	}
	got := buf.String()
	for _, want := range []string{`msg="on_change hook done"`, `msg="on_change hook failed"`, "exit_code=3", `stderr="vpn down"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "WaitDelay") {
		t.Errorf("log blames WaitDelay:\n%s", got)
	}
}
