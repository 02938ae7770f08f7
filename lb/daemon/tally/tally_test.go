package tally_test

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"flowpin/lb/clock/clocktest"
	"flowpin/lb/daemon/passive"
	"flowpin/lb/daemon/tally"
	"flowpin/lb/daemon/tally/tallytest"
	"flowpin/nft/ct"
)

const v4, v6 = unix.AF_INET, unix.AF_INET6

// metrics counts what the tracker reports.
type metrics struct {
	mu                      sync.Mutex
	events                  map[ct.EventType]int
	losses, recounts, fixed int64
}

func (m *metrics) Event(t ct.EventType) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events[t]++
}

func (m *metrics) Lost() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.losses++
}

func (m *metrics) Reconciled(corrected int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recounts++
	m.fixed += corrected
}

func (m *metrics) get() (losses, recounts, fixed int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.losses, m.recounts, m.fixed
}

type trackerHarness struct {
	t     *testing.T
	table *tallytest.Table
	clock *clocktest.Fake
	m     *metrics
	tr    *tally.Tracker
	stop  func()
}

func newTrackerHarness(t *testing.T) *trackerHarness {
	h := &trackerHarness{t: t, table: tallytest.New(), clock: clocktest.New(), m: &metrics{events: map[ct.EventType]int{}}}
	h.tr = tally.New(h.table, 0xff00, h.clock, slog.New(slog.NewTextHandler(io.Discard, nil)), h.m, 0, tally.ReconcileInterval)
	return h
}

func (h *trackerHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.tr.Run(ctx) }()
	h.stop = func() { cancel(); <-done }
	h.t.Cleanup(h.stop)
}

// nonzero drops the keys counted down to zero.
func nonzero(m map[tally.Key]int64) map[tally.Key]int64 {
	maps.DeleteFunc(m, func(_ tally.Key, n int64) bool { return n == 0 })
	return m
}

func (h *trackerHarness) waitCounts(want map[tally.Key]int64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, ready := h.tr.Counts()
		if ready && cmp.Equal(nonzero(got), want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("counts (ready %v) (-got +want):\n%s", ready, cmp.Diff(nonzero(got), want))
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *trackerHarness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: never happened", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// The subscription comes first and the dump after, so a flow can be in
// the dump and arrive as NEW, or die after the dump read it: neither may
// be counted twice or kept.
func TestFlowCountsDumpRacesEvents(t *testing.T) {
	h := newTrackerHarness(t)
	h.table.Put(1, 0x100, v4)
	h.table.Put(2, 0x100, v4)
	h.table.Put(3, 0x200, v6)
	h.table.Put(4, 0, v4)
	h.table.Put(6, 0x200, v4) // created after the subscription: also a NEW
	walked, release := h.table.HoldNextWalk()
	h.start()
	<-walked
	h.table.Send(
		ct.Event{Type: ct.EventDestroy, ID: 1, Mark: 0x100, Family: v4},
		ct.Event{Type: ct.EventNew, ID: 6, Mark: 0x200, Family: v4},
		ct.Event{Type: ct.EventNew, ID: 5, Mark: 0x200, Family: v4},
	)
	h.table.Send() // the batch above is applied once this one is taken
	if _, ready := h.tr.Counts(); ready {
		t.Fatal("ready before the dump ended")
	}
	release()
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1, {0x200, v6}: 1, {0x200, v4}: 2, {0, v4}: 1})

	// Live: an unpinned flow gets pinned (its mark changes), one ends, a
	// mark outside the mask counts under its masked value.
	h.table.Send(
		ct.Event{Type: ct.EventUpdate, ID: 4, Mark: 0x100, Family: v4},
		ct.Event{Type: ct.EventDestroy, ID: 2, Mark: 0x100, Family: v4},
		ct.Event{Type: ct.EventNew, ID: 7, Mark: 0x10200, Family: v6},
		ct.Event{Type: ct.EventDestroy, ID: 99, Mark: 0x100, Family: v4}, // never seen
	)
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1, {0x200, v6}: 2, {0x200, v4}: 2})
}

// Lost events start a re-count at once, counted in the metric; the
// re-count corrects what the lost events would have said.
func TestFlowCountsRecountAfterLoss(t *testing.T) {
	h := newTrackerHarness(t)
	h.table.Put(1, 0x100, v4)
	h.start()
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1})
	// Two flows begin and one ends, and the kernel could not tell.
	h.table.Put(2, 0x200, v4)
	h.table.Put(3, 0x200, v4)
	h.table.Del(1)
	h.table.Send(ct.Event{Type: ct.EventLost})
	h.waitCounts(map[tally.Key]int64{{0x200, v4}: 2})
	if n := h.table.WalkCount(); n != 2 {
		t.Errorf("%d walks, want 2 (start, loss)", n)
	}
	if v := func() int64 { l, _, _ := h.m.get(); return l }(); v != 1 {
		t.Errorf("losses metric %v, want 1", v)
	}
	h.eventually("corrections counted", func() bool { _, _, f := h.m.get(); return f == 3 })
}

// Lost events during a re-count make another one after it: the lost
// events may be about flows the running dump had already passed.
func TestFlowCountsLossDuringDumpDumpsAgain(t *testing.T) {
	h := newTrackerHarness(t)
	walked, release := h.table.HoldNextWalk()
	h.start()
	<-walked
	h.table.Put(1, 0x100, v4) // after the dump read the table, no event
	h.table.Send(ct.Event{Type: ct.EventLost})
	h.table.Send()
	release()
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1})
	if n := h.table.WalkCount(); n != 2 {
		t.Errorf("%d walks, want 2", n)
	}
}

// Drift (events the kernel never sent) is corrected by the periodic
// re-count.
func TestFlowCountsPeriodicRecount(t *testing.T) {
	h := newTrackerHarness(t)
	h.table.Put(1, 0x100, v4)
	h.start()
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1})
	h.table.Put(2, 0x100, v6)
	h.clock.Advance(tally.ReconcileInterval - time.Second)
	time.Sleep(20 * time.Millisecond)
	if n := h.table.WalkCount(); n != 1 {
		t.Fatalf("%d walks before the interval, want 1", n)
	}
	h.clock.Advance(time.Second)
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1, {0x100, v6}: 1})
	if v := func() int64 { _, r, _ := h.m.get(); return r }(); v != 1 {
		t.Errorf("recounts %v, want 1", v)
	}
}

// The tally is the flows per mark, those of IPv6 among them; a mark
// counted down to zero is left out, and nothing is served before the
// first count (nor by a daemon that does not follow conntrack).
func TestTally(t *testing.T) {
	if _, ok := (*tally.Tracker)(nil).Tally(); ok {
		t.Error("a nil tracker has a tally")
	}
	h := newTrackerHarness(t)
	if _, ok := h.tr.Tally(); ok {
		t.Error("a tally before the first count")
	}
	h.table.Put(1, 0x100, v4)
	h.table.Put(2, 0x100, v6)
	h.table.Put(3, 0x10200, v4)
	h.start()
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1, {0x100, v6}: 1, {0x200, v4}: 1})
	h.table.Send(ct.Event{Type: ct.EventDestroy, ID: 3})
	h.waitCounts(map[tally.Key]int64{{0x100, v4}: 1, {0x100, v6}: 1})
	got, ok := h.tr.Tally()
	if !ok || len(got) != 1 || got[0x100].Flows != 2 || got[0x100].FlowsIPv6 != 1 {
		t.Errorf("tally %v (ok %v)", got, ok)
	}
	if h.tr.Mask() != 0xff00 {
		t.Errorf("mask %#x", h.tr.Mask())
	}
}

// watcher records what the tracker shows it.
type watcher struct {
	mu           sync.Mutex
	events, tick int
}

func (w *watcher) Events(evs []ct.Event, _ time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events += len(evs)
}

func (w *watcher) Tick(time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tick++
}

func (w *watcher) get() (int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events, w.tick
}

// The watcher sees every batch after it is counted, and the ticks; once
// taken off, nothing more.
func TestWatcher(t *testing.T) {
	h := newTrackerHarness(t)
	w := &watcher{}
	h.tr.Watch(w)
	if h.tr.Watcher() != w {
		t.Fatal("Watcher is not the one set")
	}
	h.start()
	h.waitCounts(map[tally.Key]int64{})
	h.table.Send(ct.Event{Type: ct.EventNew, ID: 1, Mark: 0x100, Family: v4}, ct.Event{Type: ct.EventNew, ID: 2, Mark: 0x100, Family: v4})
	h.table.Settle()
	if n, _ := w.get(); n != 2 {
		t.Errorf("watcher saw %d events, want 2", n)
	}
	h.clock.Advance(passive.TickEvery)
	h.eventually("a tick", func() bool { _, n := w.get(); return n >= 1 })
	h.tr.Watch(nil)
	if h.tr.Watcher() != nil {
		t.Error("a watcher after Watch(nil)")
	}
	h.table.Send(ct.Event{Type: ct.EventNew, ID: 3, Mark: 0x100, Family: v4})
	h.table.Settle()
	if n, _ := w.get(); n != 2 {
		t.Errorf("watcher saw %d events after it was taken off", n)
	}
}

// One tracker runs across reloads while the mask stays: Reuse gives it
// back only for the same mask; Run of another stops the one before.
func TestShared(t *testing.T) {
	var s tally.Shared
	if s.Reuse(0xff00) != nil {
		t.Fatal("a tracker before any ran")
	}
	a, b := newTrackerHarness(t), newTrackerHarness(t)
	a.table.Put(1, 0x100, v4)
	s.Run(a.tr)
	s.Run(a.tr) // again: still the one
	a.waitCounts(map[tally.Key]int64{{0x100, v4}: 1})
	if s.Reuse(0xff00) != a.tr || s.Reuse(0xff) != nil {
		t.Error("Reuse by mask")
	}
	s.Run(b.tr)
	b.waitCounts(map[tally.Key]int64{})
	if s.Reuse(0xff00) != b.tr {
		t.Error("not the tracker run last")
	}
	s.Stop()
	if s.Reuse(0xff00) != nil {
		t.Error("a tracker after Stop")
	}
	if m := a.tr.Metrics(); m != a.m {
		t.Errorf("metrics %v", m)
	}
	a.tr.SetMetrics(b.m)
	if a.tr.Metrics() != b.m {
		t.Error("SetMetrics")
	}
}
