package integration

import (
	"bufio"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tunSession is a running tunpair: one point-to-point link between two
// namespaces, alive as long as the process.
type tunSession struct {
	cmd  *exec.Cmd
	once sync.Once
}

// startTunPair creates tun devices ifA in nsA and ifB in nsB, linked by a
// tunpair process, and ends it in t.Cleanup.
func startTunPair(t testing.TB, nsA, ifA, nsB, ifB string) *tunSession {
	t.Helper()
	if tunpairBin == "" {
		t.Skip("tunpair not built (FLOWPIN_SKIP_BUILD=1)")
	}
	for _, ns := range []string{nsA, nsB} {
		if err := mustOwn(ns); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(tunpairBin, nsA, ifA, nsB, ifB)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("tunpair: %v", err)
	}
	s := &tunSession{cmd: cmd}
	t.Cleanup(s.end)
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			s.end()
			t.Fatalf("tunpair %s %s %s %s: %q %s", nsA, ifA, nsB, ifB, line, stderr.String())
		}
	case <-time.After(10 * time.Second):
		s.end()
		t.Fatalf("tunpair not ready after 10 s: %s", stderr.String())
	}
	return s
}

// end kills the process: both interfaces vanish, as when a PPP session
// ends.
func (s *tunSession) end() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // a stopped process takes SIGKILL too, but say so
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
}

// freeze stops the process: the interfaces stay up with carrier and
// nothing passes, a silent failure. It returns the thaw.
func (s *tunSession) freeze(t testing.TB) func() {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	return func() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }
}
