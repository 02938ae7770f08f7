package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"flowpin/lb/config"
	"flowpin/lb/ctl"
	"flowpin/lb/daemon/carry"
	"flowpin/lb/daemon/hooks"
	"flowpin/lb/daemon/keep"
	"flowpin/lb/daemon/tally"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

// Supervisor runs the daemon and reloads its config on request (SIGHUP,
// POST /reload). A reload is refused, and the running daemon left alone,
// when the new config does not load or does not plan against the
// interfaces. Otherwise the daemon of the old config stops (leaving the
// kernel as it is), one of the new config starts, inheriting the health of
// every link that remains, what was pending for it (the fate of its
// flows, hooks of changes not yet synced) and the metrics (counters go on
// counting); the probe loops, the flow tracker and the nft counters'
// offsets belong to the supervisor and go on through it. Its first sync
// applies the difference:
// pinned flows of the links that remain are untouched, new weights, rules
// and policies apply to new flows at once, and the flows of a removed link
// are deleted so they reconnect elsewhere (apply does that for a link that
// left the config).
type Supervisor struct {
	Log  *slog.Logger
	Deps Deps
	// Load reads and checks the config file, as at start.
	Load func() (*config.Config, error)
	// Setup, if set, prepares each daemon before it runs (metrics).
	Setup func(*Daemon) error
	// OnReady, if set, is called each time a daemon has done its first
	// sync: at start and after every reload.
	OnReady func(*Daemon)

	cur  atomic.Pointer[Daemon]
	reqs chan chan error
	done chan struct{}
}

// NewSupervisor prepares a supervisor; Run starts it.
func NewSupervisor(deps Deps, load func() (*config.Config, error), log *slog.Logger) *Supervisor {
	return &Supervisor{Log: log, Deps: deps, Load: load, reqs: make(chan chan error), done: make(chan struct{})}
}

// Current is the daemon that runs now (nil before Run).
func (s *Supervisor) Current() *Daemon { return s.cur.Load() }

// Reload asks Run to reload the config and waits for the outcome: nil once
// the new config is applied, or why it was refused (the old one runs on).
func (s *Supervisor) Reload() error {
	ch := make(chan error, 1)
	select {
	case s.reqs <- ch:
	case <-s.done:
		return errors.New("the daemon is stopping")
	}
	select {
	case err := <-ch:
		return err
	case <-s.done:
		return errors.New("the daemon is stopping")
	}
}

type running struct {
	d      *Daemon
	cancel context.CancelFunc
	exited chan error
}

// launch starts a daemon of c, inheriting prev's link health, and waits
// until its first sync is done or it ended.
func (s *Supervisor) launch(ctx context.Context, c *config.Config, prev *Daemon) (*running, error) {
	d := New(c, s.Deps, s.Log)
	if prev != nil {
		d.inherit = prev.handOver()
		d.inheritMetrics(prev)
	}
	if s.Setup != nil {
		if err := s.Setup(d); err != nil {
			return nil, err
		}
	}
	ready := make(chan struct{})
	d.OnReady = func() { close(ready) }
	dctx, cancel := context.WithCancel(ctx)
	r := &running{d: d, cancel: cancel, exited: make(chan error, 1)}
	go func() { r.exited <- d.Run(dctx) }()
	select {
	case <-ready:
		s.cur.Store(d)
		if s.OnReady != nil {
			s.OnReady(d)
		}
		return r, nil
	case err := <-r.exited:
		cancel()
		if err == nil {
			err = errors.New("stopped before its first sync")
		}
		return nil, err
	}
}

// Run runs the daemon of c until ctx ends, reloading on request.
func (s *Supervisor) Run(ctx context.Context, c *config.Config) error {
	defer close(s.done)
	// One hook runner for all: a reload must not kill a running hook.
	if s.Deps.Hooks == nil {
		s.Deps.Hooks = hooks.NewRunner(c.Hooks.Timeout, s.Log)
		defer s.Deps.Hooks.Stop()
	}
	s.Deps.Hooks.SetTimeout(c.Hooks.Timeout)
	// One set of probe loops, and one flow tracker while the mark mask
	// stays, for all: a reload must not restart them.
	if s.Deps.probes == nil {
		s.Deps.probes = newProbeLoops()
		defer s.Deps.probes.stop()
	}
	if s.Deps.carry == nil {
		s.Deps.carry = carry.NewSet()
	}
	if s.Deps.Flows != nil && s.Deps.flowsShared == nil {
		s.Deps.flowsShared = &tally.Shared{}
		defer s.Deps.flowsShared.Stop()
	}
	r, err := s.launch(ctx, c, nil)
	if err != nil {
		return err
	}
	for {
		select {
		case err := <-r.exited:
			r.cancel()
			return err
		case req := <-s.reqs:
			next, err := s.reload(ctx, r)
			if next != nil {
				r = next
			}
			req <- err
		}
	}
}

// reload checks the new config and, if it is good, replaces r's daemon.
// It returns the daemon now running (nil: r still runs) and the outcome.
func (s *Supervisor) reload(ctx context.Context, r *running) (*running, error) {
	old := r.d.Config
	s.Log.Info("reloading the config")
	c, err := s.check()
	if err != nil {
		s.Log.Error("reload refused; running on the old config", "err", err)
		return nil, err
	}
	r.d.handover.Store(true)
	r.cancel()
	if err := <-r.exited; err != nil {
		s.Log.Error("the daemon of the old config ended with an error", "err", err)
	}
	s.Deps.Hooks.SetTimeout(c.Hooks.Timeout)
	next, err := s.launch(ctx, c, r.d)
	if err != nil {
		s.Log.Error("the new config failed to apply; going back to the old one", "err", err)
		s.Deps.Hooks.SetTimeout(old.Hooks.Timeout)
		back, berr := s.launch(ctx, old, r.d)
		if berr != nil {
			// Nothing runs: Run ends with this.
			err = errors.Join(err, fmt.Errorf("back to the old config: %w", berr))
			dead := &running{d: r.d, cancel: func() {}, exited: make(chan error, 1)}
			dead.exited <- err
			return dead, err
		}
		return back, fmt.Errorf("apply the new config: %w (running on the old config)", err)
	}
	s.Log.Info("reloaded the config", "links", len(c.Links), "changes", describeReload(old, c))
	return next, nil
}

// check loads the new config and plans it against the interfaces,
// without changing anything.
func (s *Supervisor) check() (*config.Config, error) {
	c, err := s.Load()
	if err != nil {
		return nil, err
	}
	if _, err := s.Deps.Applier.PrepareWith(c, plan.Options{MissingOK: true}); err != nil {
		return nil, err
	}
	return c, nil
}

// describeReload names what a reload changed, for the log.
func describeReload(old, c *config.Config) string {
	was := map[string]config.Link{}
	for _, l := range old.Links {
		was[l.Name] = l
	}
	var out []string
	for _, l := range c.Links {
		o, ok := was[l.Name]
		switch {
		case !ok:
			out = append(out, "+"+l.Name)
		case o.Weight != l.Weight:
			out = append(out, fmt.Sprintf("%s weight %d->%d", l.Name, o.Weight, l.Weight))
		}
		delete(was, l.Name)
	}
	for _, l := range old.Links {
		if _, gone := was[l.Name]; gone {
			out = append(out, "-"+l.Name)
		}
	}
	if len(out) == 0 {
		return "no link changes"
	}
	return strings.Join(out, ", ")
}

// handover is what a daemon leaves the one of the reloaded config, by
// unit key: each link's health, the fate of the flows of links that went
// down (lb/daemon/keep), and the hooks of changes whose sync it did not run.
type handover struct {
	trackers map[string]*health.Tracker
	keep     *keep.Flows
	hooks    []hooks.Change
	held6    held6
	role     plan.Role
}

// handOver is what the daemon that follows this one inherits; only after
// its Run has ended.
func (d *Daemon) handOver() *handover {
	return &handover{
		trackers: d.board.Trackers(), keep: d.keep.Clone(), hooks: d.pendingHooks.List(), held6: d.held6, role: d.Role(),
	}
}

// inherited returns the tracker a link (unit key) had before a reload,
// with the new config's check applied, or nil; and takes over what was
// pending for it.
func (d *Daemon) inherited(key string, c config.HealthCheck) *health.Tracker {
	if d.inherit == nil {
		return nil
	}
	t := d.inherit.trackers[key]
	if t == nil {
		return nil
	}
	t.Fall, t.Rise = c.Fall, c.Rise
	d.keep.Inherit(d.inherit.keep, key)
	return t
}

// inheritHooks queues the hooks of the changes the previous daemon saw
// but did not sync, for the links that remain: they run after this
// daemon's first sync. And whether the route failed open, so a reload
// does not say it again.
func (d *Daemon) inheritHooks() {
	if d.inherit == nil {
		return
	}
	d.keep.InheritOpen(d.inherit.keep)
	// The role goes on from where it was, so a role that changed across
	// the reload is said and counted as a change (role.go).
	if d.Config.HA {
		d.roleMu.Lock()
		d.role = d.inherit.role
		d.roleMu.Unlock()
	}
	for _, ch := range d.inherit.hooks {
		if i, ok := d.Config.LinkByName(ch.Link.Name); ok {
			ch.Link = d.Config.Links[i]
			d.pendingHooks.Add(ch)
		}
	}
}

// Reloader is a Source that can reload the daemon's config.
type Reloader interface {
	Reload() error
}

// reloadHandler answers POST /reload: root only, as the kernel says who
// is calling (SO_PEERCRED); 200 when applied, 422 with the reason when
// refused.
func reloadHandler(r Reloader) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if uid, ok := req.Context().Value(peerUIDKey{}).(uint32); !ok || uid != 0 {
			http.Error(w, "only root may reload the daemon", http.StatusForbidden)
			return
		}
		if err := r.Reload(); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		_, _ = io.WriteString(w, "reloaded\n")
	}
}

type peerUIDKey struct{}

// connPeer records a unix socket client's uid in its requests' context.
func connPeer(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*capConn); ok {
		c = cc.Conn
	}
	if uc, ok := c.(*net.UnixConn); ok {
		if cred, err := ctl.PeerCred(uc); err == nil {
			return context.WithValue(ctx, peerUIDKey{}, cred.Uid)
		}
	}
	return ctx
}
