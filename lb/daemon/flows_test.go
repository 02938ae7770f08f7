package daemon

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"flowpin/lb/status"
	"flowpin/nft/ct"
)

const v4, v6 = unix.AF_INET, unix.AF_INET6

type trackerHarness struct {
	t     *testing.T
	table *fakeFlowTable
	clock *fakeClock
	m     *Metrics
	tr    *flowTracker
	stop  func()
}

func newTrackerHarness(t *testing.T) *trackerHarness {
	h := &trackerHarness{t: t, table: newFakeFlowTable(), clock: newFakeClock(), m: NewMetrics()}
	h.tr = newFlowTracker(h.table, 0xff00, h.clock, slog.New(slog.NewTextHandler(io.Discard, nil)), h.m, 0, ReconcileInterval)
	return h
}

func (h *trackerHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.tr.run(ctx) }()
	h.stop = func() { cancel(); <-done }
	h.t.Cleanup(h.stop)
}

// nonzero drops the keys counted down to zero.
func nonzero(m map[flowKey]int64) map[flowKey]int64 {
	maps.DeleteFunc(m, func(_ flowKey, n int64) bool { return n == 0 })
	return m
}

func (h *trackerHarness) waitCounts(want map[flowKey]int64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, ready := h.tr.snapshot()
		if ready && cmp.Equal(nonzero(got), want, cmp.AllowUnexported(flowKey{})) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("counts (ready %v) (-got +want):\n%s", ready, cmp.Diff(nonzero(got), want, cmp.AllowUnexported(flowKey{})))
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
	h.table.put(1, 0x100, v4)
	h.table.put(2, 0x100, v4)
	h.table.put(3, 0x200, v6)
	h.table.put(4, 0, v4)
	h.table.put(6, 0x200, v4) // created after the subscription: also a NEW
	walked, release := h.table.holdNextWalk()
	h.start()
	<-walked
	h.table.send(
		ct.Event{Type: ct.EventDestroy, ID: 1, Mark: 0x100, Family: v4},
		ct.Event{Type: ct.EventNew, ID: 6, Mark: 0x200, Family: v4},
		ct.Event{Type: ct.EventNew, ID: 5, Mark: 0x200, Family: v4},
	)
	h.table.send() // the batch above is applied once this one is taken
	if _, ready := h.tr.snapshot(); ready {
		t.Fatal("ready before the dump ended")
	}
	release()
	h.waitCounts(map[flowKey]int64{{0x100, v4}: 1, {0x200, v6}: 1, {0x200, v4}: 2, {0, v4}: 1})

	// Live: an unpinned flow gets pinned (its mark changes), one ends, a
	// mark outside the mask counts under its masked value.
	h.table.send(
		ct.Event{Type: ct.EventUpdate, ID: 4, Mark: 0x100, Family: v4},
		ct.Event{Type: ct.EventDestroy, ID: 2, Mark: 0x100, Family: v4},
		ct.Event{Type: ct.EventNew, ID: 7, Mark: 0x10200, Family: v6},
		ct.Event{Type: ct.EventDestroy, ID: 99, Mark: 0x100, Family: v4}, // never seen
	)
	h.waitCounts(map[flowKey]int64{{0x100, v4}: 1, {0x200, v6}: 2, {0x200, v4}: 2})
}

// Lost events start a re-count at once, counted in the metric; the
// re-count corrects what the lost events would have said.
func TestFlowCountsRecountAfterLoss(t *testing.T) {
	h := newTrackerHarness(t)
	h.table.put(1, 0x100, v4)
	h.start()
	h.waitCounts(map[flowKey]int64{{0x100, v4}: 1})
	// Two flows begin and one ends, and the kernel could not tell.
	h.table.put(2, 0x200, v4)
	h.table.put(3, 0x200, v4)
	h.table.del(1)
	h.table.send(ct.Event{Type: ct.EventLost})
	h.waitCounts(map[flowKey]int64{{0x200, v4}: 2})
	if n := h.table.walkCount(); n != 2 {
		t.Errorf("%d walks, want 2 (start, loss)", n)
	}
	if v := testutil.ToFloat64(h.m.ctLosses); v != 1 {
		t.Errorf("losses metric %v, want 1", v)
	}
	h.eventually("corrections counted", func() bool { return testutil.ToFloat64(h.m.ctCorrected) == 3 })
}

// Lost events during a re-count make another one after it: the lost
// events may be about flows the running dump had already passed.
func TestFlowCountsLossDuringDumpDumpsAgain(t *testing.T) {
	h := newTrackerHarness(t)
	walked, release := h.table.holdNextWalk()
	h.start()
	<-walked
	h.table.put(1, 0x100, v4) // after the dump read the table, no event
	h.table.send(ct.Event{Type: ct.EventLost})
	h.table.send()
	release()
	h.waitCounts(map[flowKey]int64{{0x100, v4}: 1})
	if n := h.table.walkCount(); n != 2 {
		t.Errorf("%d walks, want 2", n)
	}
}

// Drift (events the kernel never sent) is corrected by the periodic
// re-count.
func TestFlowCountsPeriodicRecount(t *testing.T) {
	h := newTrackerHarness(t)
	h.table.put(1, 0x100, v4)
	h.start()
	h.waitCounts(map[flowKey]int64{{0x100, v4}: 1})
	h.table.put(2, 0x100, v6)
	h.clock.Advance(ReconcileInterval - time.Second)
	time.Sleep(20 * time.Millisecond)
	if n := h.table.walkCount(); n != 1 {
		t.Fatalf("%d walks before the interval, want 1", n)
	}
	h.clock.Advance(time.Second)
	h.waitCounts(map[flowKey]int64{{0x100, v4}: 1, {0x100, v6}: 1})
	if v := testutil.ToFloat64(h.m.ctRecounts); v != 1 {
		t.Errorf("recounts %v, want 1", v)
	}
}

// FlowTally serves flows per mark from memory and each link's traffic
// from its rules' counters, not from a dump.
func TestFlowTally(t *testing.T) {
	h := newHarness(t)
	h.flows = newFakeFlowTable()
	h.flows.put(1, 0x100, v4)
	h.flows.put(2, 0x100, v6)
	h.flows.put(3, 0, v4)
	h.flows.put(4, 0x700, v4)
	h.traffic = fakeTraffic{
		"prerouting restore isp1": {Packets: 10, Bytes: 1000},
		"output restore isp1":     {Packets: 1, Bytes: 100},
		"postrouting save isp1":   {Packets: 2, Bytes: 120},
		"prerouting from isp1":    {Packets: 9, Bytes: 9000},
		"prerouting save isp1":    {Packets: 1, Bytes: 60}, // part of "from"
	}
	walked, release := h.flows.holdNextWalk()
	h.run()
	<-walked
	if _, err := h.d.FlowTally(); err != ErrCountsNotReady {
		t.Errorf("before the first count: %v, want ErrCountsNotReady", err)
	}
	release()
	<-h.ready
	h.eventually("counted", func() bool { _, ok := h.d.flows.snapshot(); return ok })
	walks := h.flows.walkCount()
	tally, err := h.d.FlowTally()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]status.Counters{}
	for m, c := range tally {
		got[m] = *c
	}
	want := map[uint32]status.Counters{
		0x100: {Flows: 2, FlowsIPv6: 1, BytesOut: 1220, PacketsOut: 13, BytesIn: 9000, PacketsIn: 9},
		0x200: {},
		0:     {Flows: 1},
		0x700: {Flows: 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("tally (-want +got):\n%s", d)
	}
	if h.flows.walkCount() != walks {
		t.Error("FlowTally walked the table")
	}
}
