// Package hooks is the daemon's hook runner: it runs on_change hooks and
// on-demand commands in the background, one queue per link, and queues
// the link changes whose hook waits for the sync after them. It knows
// nothing of the daemon: the daemon's loop submits jobs and hands it the
// changes.
package hooks

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

// A Job is one command to run: a hook or an on-demand up/down.
type Job struct {
	// Queue orders jobs: those of one queue (a link) run one at a time, in
	// the order submitted; different queues run side by side.
	Queue string
	What  string // for the log: "on_change hook", "on_demand up"
	Argv  []string
	Env   []string // added to the daemon's environment
	// Done, if set, is called with the outcome on the runner's goroutine.
	Done func(error)
}

// Runner runs jobs in the background, so neither the daemon's loop
// nor a failover ever waits for one. A job that outlives Timeout is
// killed with its whole process group (a shell script's children too).
type Runner struct {
	Timeout time.Duration
	Log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	queues map[string][]Job // waiting; a key present means a worker runs
	wg     sync.WaitGroup
}

// NewRunner returns a runner; Stop kills what runs and drops the rest.
func NewRunner(timeout time.Duration, log *slog.Logger) *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{Timeout: timeout, Log: log, ctx: ctx, cancel: cancel, queues: map[string][]Job{}}
}

// SetTimeout changes the timeout of the jobs that start from now on.
func (r *Runner) SetTimeout(t time.Duration) {
	r.mu.Lock()
	r.Timeout = t
	r.mu.Unlock()
}

// Submit queues j and returns at once.
func (r *Runner) Submit(j Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	q, busy := r.queues[j.Queue]
	r.queues[j.Queue] = append(q, j)
	if busy {
		return
	}
	r.wg.Add(1)
	go r.work(j.Queue)
}

func (r *Runner) work(key string) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		q := r.queues[key]
		if len(q) == 0 || r.ctx.Err() != nil {
			delete(r.queues, key)
			r.mu.Unlock()
			return
		}
		j := q[0]
		r.queues[key] = q[1:]
		r.mu.Unlock()
		err := r.run(j)
		if j.Done != nil {
			j.Done(err)
		}
	}
}

// Stop kills the jobs that run, drops those waiting and waits for the
// workers to end.
func (r *Runner) Stop() {
	r.mu.Lock()
	r.cancel()
	r.mu.Unlock()
	r.wg.Wait()
}

// stderrTail is how much of a failed job's stderr the log keeps.
const stderrTail = 512

func (r *Runner) run(j Job) error {
	r.mu.Lock()
	timeout := r.Timeout
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, j.Argv[0], j.Argv[1:]...)
	cmd.Env = append(os.Environ(), j.Env...)
	// Its own process group, so the kill reaches what a script started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr tailBuffer
	start := time.Now()
	err := runWithStderr(cmd, &stderr)
	took := time.Since(start).Round(time.Millisecond)
	attrs := []any{"queue", j.Queue, "command", strings.Join(j.Argv, " "), "took", took}
	switch {
	case err == nil:
		r.Log.Info(j.What+" done", attrs...)
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("killed after the timeout of %v", timeout)
	case r.ctx.Err() != nil:
		err = errors.New("killed: the daemon is stopping")
	}
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	r.Log.Error(j.What+" failed", append(attrs, "exit_code", code, "err", err, "stderr", stderr.String())...)
	return err
}

// runWithStderr runs cmd with its stderr going to tail, and returns once
// the process has exited: its exit status is the outcome.
//
// The stderr is a pipe of our own, not an io.Writer handed to exec: exec
// would then wait for the write end to close everywhere, and a child the
// hook left in the background (a daemon it restarted) holds it open. Wait
// would stall and then report ErrWaitDelay for a hook that exited 0. What
// the hook wrote before it exited is in the pipe when Wait returns and is
// read without waiting; a background child's later writes get EPIPE once
// the read end is closed, as they would after exec's WaitDelay.
func runWithStderr(cmd *exec.Cmd, tail *tailBuffer) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	defer pr.Close()
	cmd.Stderr = pw
	err = cmd.Start()
	pw.Close() // the child has its own copy
	if err != nil {
		return err
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// Ends at EOF, or when the deadline below stops it.
		_, _ = io.Copy(tail, pr)
	}()
	err = cmd.Wait()
	_ = pr.SetReadDeadline(time.Now())
	<-copied
	// The copy may have stopped with the hook's last writes unread: take
	// what the pipe holds now, without waiting for more.
	_ = pr.SetReadDeadline(time.Time{})
	if rc, rerr := pr.SyscallConn(); rerr == nil {
		buf := make([]byte, 4096)
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, rerr := unix.Read(int(fd), buf)
				if n <= 0 || rerr != nil {
					return true
				}
				_, _ = tail.Write(buf[:n])
			}
		})
	}
	return err
}

// tailBuffer keeps the last stderrTail bytes written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > stderrTail {
		t.b = t.b[len(t.b)-stderrTail:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// tierEnv is an active tier as a hook sees it: 1-based, or none.
func tierEnv(active int) string {
	if active < 0 {
		return "none"
	}
	return fmt.Sprint(active + 1)
}

// Change is a link state change whose hook waits for the sync that
// follows it, so the hook sees the policies' tiers as that sync left them.
type Change struct {
	Link   config.Link
	V6     bool
	State  health.LinkState
	Reason string
	// Cause is who made the change: CauseHealth (the checks; "" too),
	// CauseOperator (flowpin link) or CauseQuota (a quota exhausted or
	// renewed).
	Cause string
}

// Causes of a change (FLOWPIN_CAUSE).
const (
	CauseHealth   = "health"
	CauseOperator = "operator"
	CauseQuota    = "quota"
)

// Pending are the changes whose hooks wait for the next sync. Owned by
// the daemon's loop.
type Pending struct {
	changes []Change
}

// Add queues ch's hook for after the next sync.
func (p *Pending) Add(ch Change) { p.changes = append(p.changes, ch) }

// Take returns the changes queued and forgets them.
func (p *Pending) Take() []Change {
	out := p.changes
	p.changes = nil
	return out
}

// Coalesce keeps only the last change queued of each link and family,
// in the order of those last changes: while changes wait long (an HA
// backup's), only where each link ended up matters.
func (p *Pending) Coalesce() {
	last := map[string]int{}
	for i, ch := range p.changes {
		last[fmt.Sprintf("%s/%t", ch.Link.Name, ch.V6)] = i
	}
	out := p.changes[:0:0]
	for i, ch := range p.changes {
		if last[fmt.Sprintf("%s/%t", ch.Link.Name, ch.V6)] == i {
			out = append(out, ch)
		}
	}
	p.changes = out
}

// List is a copy of the changes queued (for the daemon of a reload).
func (p *Pending) List() []Change { return slices.Clone(p.changes) }

// OnChange is the job of the on_change hook cmd for ch, in ch's link's
// queue. up names the links up in ch's family and policies are the
// policies as the sync after ch left them.
func OnChange(cmd string, ch Change, up []string, policies []plan.PolicyPlan) Job {
	return Job{
		Queue: ch.Link.Name, What: "on_change hook",
		Argv: []string{cmd},
		Env:  Env(ch, up, policies),
	}
}

// Env is what a hook learns of a change.
func Env(ch Change, up []string, policies []plan.PolicyPlan) []string {
	fam := "ipv4"
	if ch.V6 {
		fam = "ipv6"
	}
	env := []string{
		"FLOWPIN_LINK=" + ch.Link.Name,
		"FLOWPIN_INTERFACE=" + ch.Link.Interface,
		"FLOWPIN_FAMILY=" + fam,
		"FLOWPIN_STATE=" + string(ch.State),
		"FLOWPIN_REASON=" + ch.Reason,
		"FLOWPIN_CAUSE=" + cmp.Or(ch.Cause, CauseHealth),
	}
	env = append(env, "FLOWPIN_UP_LINKS="+strings.Join(up, ","))
	for _, p := range policies {
		env = append(env, config.PolicyEnvName(p.Name)+"="+tierEnv(p.Active), config.PolicyEnvName(p.Name)+"6="+tierEnv(p.Active6))
	}
	return env
}
