package daemon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft/ct"
)

// A reload with a broken config is refused and changes nothing; a good
// one replaces the daemon, whose links keep their health; a removed link
// is gone from the new daemon.
func TestSupervisorReload(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	next, nextErr := h.c, error(nil)
	load := func() (*config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return next, nextErr
	}
	sup := NewSupervisor(Deps{Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events}, load, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, h.c) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	first := waitDaemon(t, sup, nil)

	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	waitHealth(t, first, "isp2", health.StateDown)
	applied := len(h.rec.get())

	mu.Lock()
	next, nextErr = nil, &config.ConfigError{File: "f.yaml", Line: 11, Field: "links[1].weight", Msg: "1000 is out of range (1..256)"}
	mu.Unlock()
	err := sup.Reload()
	if err == nil || err.Error() != "f.yaml:11: links[1].weight: 1000 is out of range (1..256)" {
		t.Errorf("broken config: err = %v", err)
	}
	if sup.Current() != first {
		t.Error("a refused reload replaced the daemon")
	}
	if got := h.rec.get(); len(got) != applied {
		t.Errorf("a refused reload wrote to the kernel: %q", got[applied:])
	}

	reweighted := configtest.MustParse(t, strings.Replace(checked, "weight: 1\n", "weight: 5\n", 1))
	mu.Lock()
	next, nextErr = reweighted, nil
	mu.Unlock()
	if err := sup.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	second := waitDaemon(t, sup, first)
	if second.Config != reweighted {
		t.Error("the new daemon does not run the new config")
	}
	// The counters go on counting: the same metrics, isp2's state change
	// still counted, and the flow collector is the new daemon's alone.
	if second.Metrics() != first.Metrics() {
		t.Error("the reloaded daemon started its metrics again from 0")
	}
	if got := testutil.ToFloat64(second.Metrics().changes.WithLabelValues("isp2", "ipv4")); got != 1 {
		t.Errorf("isp2's state changes after the reload: %v, want 1", got)
	}
	if _, err := second.Metrics().Registry.Gather(); err != nil {
		t.Errorf("gather after the reload: %v", err)
	}
	if s := healthOf(second, "isp2"); s.State != health.StateDown || s.Reason != "down: carrier lost on wan2" {
		t.Errorf("isp2 after the reload: %+v, want still down (carrier lost)", s)
	}

	onlyISP1 := configtest.MustParse(t, checked[:strings.Index(checked, "  - name: isp2")])
	mu.Lock()
	next = onlyISP1
	mu.Unlock()
	if err := sup.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	third := waitDaemon(t, sup, second)
	if hs := third.Health(); len(hs) != 1 || hs[0].Name != "isp1" || hs[0].State != health.StateUp {
		t.Errorf("health after removing isp2: %+v", hs)
	}
	// isp2's series are gone with it; isp1's stay.
	m := third.Metrics()
	if n := testutil.CollectAndCount(m.changes); n != 1 {
		t.Errorf("flowpin_link_state_changes_total: %d series after isp2 was removed, want 1 (isp1)", n)
	}
	if n := testutil.CollectAndCount(m.up); n != 1 {
		t.Errorf("flowpin_link_up: %d series after isp2 was removed, want 1 (isp1)", n)
	}
}

func waitDaemon(t *testing.T, s *Supervisor, not *Daemon) *Daemon {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if d := s.Current(); d != nil && d != not {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatal("no new daemon")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func healthOf(d *Daemon, link string) health.LinkHealth {
	for _, h := range d.Health() {
		if h.Name == link {
			return h
		}
	}
	return health.LinkHealth{}
}

func waitHealth(t *testing.T, d *Daemon, link string, s health.LinkState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for healthOf(d, link).State != s {
		if time.Now().After(deadline) {
			t.Fatalf("%s not %s: %+v", link, s, healthOf(d, link))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type reloaderFunc func() error

func (f reloaderFunc) Reload() error { return f() }

// Only root reloads; a refusal answers 422 with the reason.
func TestReloadHandler(t *testing.T) {
	calls := 0
	h := reloadHandler(reloaderFunc(func() error {
		calls++
		return errors.New("f.yaml:3: links[0].weight: 0 is out of range (1..256)")
	}))
	for _, tc := range []struct {
		name string
		uid  any
		code int
		body string
	}{
		{"no credentials", nil, http.StatusForbidden, "only root"},
		{"uid 1000", uint32(1000), http.StatusForbidden, "only root"},
		{"root", uint32(0), http.StatusUnprocessableEntity, "f.yaml:3: links[0].weight: 0 is out of range (1..256)"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/reload", nil)
		if tc.uid != nil {
			req = req.WithContext(context.WithValue(req.Context(), peerUIDKey{}, tc.uid))
		}
		w := httptest.NewRecorder()
		h(w, req)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Body.String(), tc.code, tc.body)
		}
	}
	if calls != 1 {
		t.Errorf("reloaded %d times, want once (root only)", calls)
	}
}

// failOnce fails the next Apply after arm.
type failOnce struct {
	*fakeKernel
	mu    sync.Mutex
	armed bool
}

func (f *failOnce) Apply(d *plan.Desired) (*apply.Result, error) {
	f.mu.Lock()
	fail := f.armed
	f.armed = false
	f.mu.Unlock()
	if fail {
		return nil, errors.New("add rule pref 1101: file exists")
	}
	return f.fakeKernel.Apply(d)
}

// A new config whose first sync fails: the daemon goes back to the old
// config and says so.
func TestSupervisorReloadFallsBack(t *testing.T) {
	h := newHarness(t)
	k := &failOnce{fakeKernel: h.k}
	reweighted := configtest.MustParse(t, strings.Replace(checked, "weight: 1\n", "weight: 5\n", 1))
	sup := NewSupervisor(Deps{Applier: k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events},
		func() (*config.Config, error) { return reweighted, nil }, quietLog())
	// Each daemon registers a collector of its own, as run's rule metrics
	// do: a daemon's must be off the shared registry before the next one's
	// (the failed one's too), or registering fails.
	sup.Setup = func(d *Daemon) error {
		return d.Metrics().registerOwned(prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowpin_test_owned", Help: "test"}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, h.c) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	first := waitDaemon(t, sup, nil)
	k.mu.Lock()
	k.armed = true
	k.mu.Unlock()
	err := sup.Reload()
	if err == nil || !strings.Contains(err.Error(), "file exists") || !strings.Contains(err.Error(), "running on the old config") {
		t.Errorf("err = %v", err)
	}
	back := waitDaemon(t, sup, first)
	if back.Config != h.c {
		t.Error("not back on the old config")
	}
	if back.Metrics() != first.Metrics() {
		t.Error("back on the old config, the metrics started again from 0")
	}
	if n := testutil.CollectAndCount(back.Metrics().Registry, "flowpin_test_owned"); n != 1 {
		t.Errorf("%d owned collectors registered, want the running daemon's alone", n)
	}
}

// runSupervisor runs sup with c until the returned stop, and returns its
// first daemon.
func runSupervisor(t *testing.T, sup *Supervisor, c *config.Config) (*Daemon, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, c) }()
	d := waitDaemon(t, sup, nil)
	return d, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// Reloads every half interval do not hold off failover: the probe loops
// go on through them, their rhythm and rounds under way kept, so a dead
// link is down after its fall rounds as without reloads.
func TestReloadStormKeepsProbing(t *testing.T) {
	h := newHarness(t)
	reweighted := []*config.Config{h.c, configtest.MustParse(t, strings.Replace(checked, "weight: 1\n", "weight: 5\n", 1))}
	var n atomic.Int32
	sup := NewSupervisor(Deps{Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events},
		func() (*config.Config, error) { return reweighted[n.Add(1)%2], nil }, quietLog())
	first, stop := runSupervisor(t, sup, h.c)
	defer stop()
	h.probers.set("wan2", false)

	// fall 3 rounds of 1s: down at 3s. Reload every 0.5s meanwhile.
	d := first
	for range 7 {
		// Both probe loops wait on their timers, as they would while real
		// time passes.
		h.eventually("timers armed", func() bool { return h.clock.ArmedBy(probeLoopTimers) >= 2 })
		h.clock.Advance(500 * time.Millisecond)
		if err := sup.Reload(); err != nil {
			t.Fatal(err)
		}
		d = waitDaemon(t, sup, d)
	}
	waitHealth(t, d, "isp2", health.StateDown)
	if s := healthOf(d, "isp2"); !strings.Contains(s.Reason, "3 rounds in a row") {
		t.Errorf("isp2: %+v", s)
	}
	if got := h.probers.opened(); got != 2 {
		t.Errorf("%d probers opened for 2 links: the probe loops were started again", got)
	}
	if s := healthOf(d, "isp1"); s.State != health.StateUp || s.Window < 3 {
		t.Errorf("isp1 after the reloads: %+v, want up with its rounds counted", s)
	}
}

// A reload keeps the flow tracker when the mark mask stays: the counts go
// on without a new dump of the table (a reload storm is not a dump storm,
// and does not wait for one).
func TestReloadKeepsFlowCounts(t *testing.T) {
	h := newHarness(t)
	ft := newFakeFlowTable()
	ft.Put(1, 0x100, v4)
	ft.Put(2, 0x200, v6)
	sup := NewSupervisor(Deps{Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events, Flows: ft},
		func() (*config.Config, error) { return h.c, nil }, quietLog())
	d, stop := runSupervisor(t, sup, h.c)
	defer stop()
	h.eventually("counted", func() bool { _, err := d.FlowTally(); return err == nil })
	walks := ft.WalkCount()
	for range 5 {
		if err := sup.Reload(); err != nil {
			t.Fatal(err)
		}
		d = waitDaemon(t, sup, d)
		tally, err := d.FlowTally()
		if err != nil || tally[0x100].Flows != 1 || tally[0x200].FlowsIPv6 != 1 {
			t.Fatalf("tally right after a reload: %v, %v", tally, err)
		}
	}
	if n := ft.WalkCount(); n != walks {
		t.Errorf("5 reloads walked the conntrack table %d times", n-walks)
	}
	// And it still follows the events.
	ft.Send(ct.Event{Type: ct.EventNew, ID: 3, Mark: 0x100, Family: v4})
	h.eventually("counted the new flow", func() bool {
		tally, err := d.FlowTally()
		return err == nil && tally[0x100].Flows == 2
	})
}

// A change whose sync a reload overtook still gets its on_change hook,
// run by the new daemon after its first sync.
func TestReloadKeepsPendingHooks(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$FLOWPIN_LINK $FLOWPIN_STATE\" >> "+filepath.Join(dir, "ran")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := configtest.MustParse(t, checked+"hooks:\n  on_change: "+hook+"\n")
	sup := NewSupervisor(Deps{Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events},
		func() (*config.Config, error) { return c, nil }, quietLog())
	first, stop := runSupervisor(t, sup, c)
	defer stop()
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	waitHealth(t, first, "isp2", health.StateDown)
	// No sync yet (the clock stands): the reload overtakes it.
	if err := sup.Reload(); err != nil {
		t.Fatal(err)
	}
	h.d = waitDaemon(t, sup, first)
	h.eventually("the hook of isp2's change", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "ran"))
		return string(b) == "isp2 down\n"
	})
}
