package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"flowpin/lb/config"
)

// MaxExecInFlight bounds the exec probes running at once, over every
// link: each link's rounds run one at a time and each is killed at its
// timeout, so only a command that escapes its process group (setsid) can
// pile up, and then the rounds fail instead of forking without end.
const MaxExecInFlight = 32

var execSlots = make(chan struct{}, MaxExecInFlight)

// execOutput is how much of a failed command's output its round keeps
// (the rest is read and dropped, so a chatty command never blocks).
const execOutput = 200

// ExecProber runs the user's command as a probe: exit 0 is an answer.
// The command learns the link from its environment; it runs in its own
// process group, which is killed at the timeout and also when the command
// exits, so a child left in the background does not outlive the round.
type ExecProber struct {
	command string
	env     []string
	gateway atomic.Pointer[netip.Addr]
}

// NewExecProber prepares the exec probe of link l's family (IPv6 with
// v6).
func NewExecProber(l config.Link, v6 bool) (*ExecProber, error) {
	if l.Check.Method != config.ProbeExec || l.Check.Command == "" {
		return nil, errors.New("exec probe: no command")
	}
	fam := "ipv4"
	if v6 {
		fam = "ipv6"
	}
	return &ExecProber{command: l.Check.Command, env: []string{
		"FLOWPIN_LINK=" + l.Name,
		"FLOWPIN_INTERFACE=" + l.Interface,
		fmt.Sprintf("FLOWPIN_MARK=%#x", l.Mark),
		"FLOWPIN_FAMILY=" + fam,
	}}, nil
}

// SetGateway tells the next rounds the link's next hop (FLOWPIN_GATEWAY).
func (p *ExecProber) SetGateway(gw netip.Addr) { p.gateway.Store(&gw) }

// Close releases nothing: a round's process is gone when Probe returns.
func (p *ExecProber) Close() {}

// Env is what the command finds in its environment besides the daemon's.
func (p *ExecProber) Env(targets []netip.Addr, timeout time.Duration) []string {
	env := append([]string(nil), p.env...)
	gw := ""
	if g := p.gateway.Load(); g != nil && g.IsValid() {
		gw = g.String()
	}
	ts := make([]string, len(targets))
	for i, t := range targets {
		ts[i] = t.String()
	}
	// The timeout, so the command can give its own tools less.
	return append(env, "FLOWPIN_GATEWAY="+gw, "FLOWPIN_TARGETS="+strings.Join(ts, " "),
		"FLOWPIN_TIMEOUT_MS="+strconv.FormatInt(timeout.Milliseconds(), 10))
}

// Probe runs the command once; it returns by the timeout whatever the
// command does.
func (p *ExecProber) Probe(targets []netip.Addr, timeout time.Duration) Round {
	select {
	case execSlots <- struct{}{}:
		defer func() { <-execSlots }()
	default:
		return Round{Sent: 1, Err: fmt.Errorf("%d exec probes already running", MaxExecInFlight)}
	}
	start := time.Now()
	err := runProbe(p.command, p.Env(targets, timeout), timeout)
	if err != nil {
		return Round{Sent: 1, Err: err}
	}
	return Round{Sent: 1, Answered: 1, RTT: time.Since(start)}
}

// runProbe runs command under /bin/sh and says why it was no answer.
func runProbe(command string, env []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Its output goes to a pipe of our own rather than an io.Writer: exec
	// would wait for every holder of the write end (a background child)
	// before Wait returns.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	var out headBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(&out, pr)
	}()
	err = cmd.Wait()
	// Whatever the command left behind in its group goes with it.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	// The group is gone, so the pipe ends at once; a process that left
	// the group (setsid) may hold it, and is not waited for.
	_ = pr.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	<-copied
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("command timed out after %v", timeout)
	}
	msg := err.Error()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		msg = fmt.Sprintf("command exited %d", ee.ExitCode())
	}
	if o := out.String(); o != "" {
		msg += ": " + o
	}
	return errors.New(msg)
}

// headBuffer keeps the first line of what is written to it, up to
// execOutput bytes, and drops the rest.
type headBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := execOutput - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	line, _, _ := bytes.Cut(bytes.TrimSpace(h.b), []byte("\n"))
	return strings.ToValidUTF8(string(bytes.TrimSpace(line)), "?")
}
