// Package tally is the daemon's flow tally: the number of conntrack flows
// per mark and address family, kept from conntrack events after one
// streamed dump and re-counted now and then, so a status or a scrape
// costs O(links) whatever the number of flows. It owns the counts (read
// from the status and metrics goroutines, hence its lock) and runs on its
// own goroutine; a Watcher (the daemon's passive detection) sees every
// batch of events after it is counted.
package tally

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/clock"
	"flowpin/lb/daemon/passive"
	"flowpin/lb/status"
	"flowpin/nft/ct"
)

// ReconcileInterval is how often the daemon re-counts the conntrack table
// to correct its event-driven flow counts. Events are the source; this
// only catches drift (an event the kernel could not send). Lost events
// (a full socket) trigger a re-count at once.
const ReconcileInterval = 60 * time.Second

// Table is conntrack as the flow counts need it: the event stream, and a
// streamed dump to start from and to correct drift with.
type Table interface {
	Subscribe(ctx context.Context, space int) (<-chan []ct.Event, error)
	Walk(f *ct.MarkFilter, d ct.Detail, fn func(rec *ct.FlowRecord)) error
}

var _ Table = (*ct.Conntrack)(nil)

// Metrics count what the tally sees: each event, each loss of events,
// and the flows each re-count corrected.
type Metrics interface {
	Event(t ct.EventType)
	Lost()
	Reconciled(corrected int64)
}

// Watcher sees every batch of events after it is counted, and a tick
// every passive.TickEvery.
type Watcher interface {
	Events(evs []ct.Event, now time.Time)
	Tick(now time.Time)
}

type watchBox struct{ w Watcher }

// Key is what a flow is counted under: its mark (under the mask) and its
// address family.
type Key struct {
	Mark   uint32
	Family uint8
}

// logged is the last thing the events said of a flow while a dump ran.
type logged struct {
	key  Key
	gone bool
}

type dumpResult struct {
	flows map[uint32]Key
	err   error
}

// Tracker keeps the number of flows per mark and family from
// conntrack events, after one streamed dump, and re-counts periodically.
//
// The race between the dump and the events: the subscription exists
// before the dump starts, so no change is missed, and a flow may be seen
// twice (in the dump and as NEW) or die during the dump after the dump
// read it. Flows are therefore kept by conntrack ID, and while a dump
// runs every event is also logged by ID; when the dump ends, the new
// table is the dump overridden by the log (the log is later than the
// dump for every flow it names).
type Tracker struct {
	table   Table
	mask    uint32
	clock   clock.Clock
	log     *slog.Logger
	metrics Metrics
	space   int
	every   time.Duration
	// watch sees every batch of events after it is counted, and a tick
	// every passive.TickEvery (the passive failure detector of the daemon
	// that runs). Optional.
	watch atomic.Pointer[watchBox]

	// Owned by run's goroutine.
	flows   map[uint32]Key
	dumping bool
	during  map[uint32]logged // events seen while a dump runs
	again   bool              // events were lost during the dump: dump again after it

	mu     sync.Mutex
	counts map[Key]int64
	ready  bool // the first dump is merged
}

// New returns a tracker of table's flows, counted by mark under mask;
// space is the event socket's receive buffer (0: ct's default), every
// the re-count interval. Run starts it.
func New(table Table, mask uint32, clk clock.Clock, log *slog.Logger, m Metrics, space int, every time.Duration) *Tracker {
	return &Tracker{
		table: table, mask: mask, clock: clk, log: log, metrics: m, space: space, every: every,
		flows: map[uint32]Key{}, counts: map[Key]int64{},
	}
}

// Counts copies the counts; ok is false until the first dump is merged.
func (t *Tracker) Counts() (map[Key]int64, bool) {
	if t == nil {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.counts), t.ready
}

// Run subscribes, dumps, and keeps counting until ctx ends. A lost
// subscription is replaced and the table dumped again.
func (t *Tracker) Run(ctx context.Context) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		events, err := t.table.Subscribe(ctx, t.space)
		if err != nil {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			t.log.Error("subscribe to conntrack events; will retry", "in", backoff, "err", err)
			tm := t.clock.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-tm.C():
			}
			tm.Stop()
			continue
		}
		backoff = 0
		started := t.clock.Now()
		t.consume(ctx, events)
		if ctx.Err() == nil && t.clock.Now().Sub(started) < time.Second {
			// A subscription that keeps failing at once must not turn
			// into a loop of dumps.
			tm := t.clock.NewTimer(time.Second)
			select {
			case <-ctx.Done():
			case <-tm.C():
			}
			tm.Stop()
		}
	}
}

// consume counts the events of one subscription until it ends, dumping
// the table at the start, every t.every, and after a loss.
func (t *Tracker) consume(ctx context.Context, events <-chan []ct.Event) {
	dumped := make(chan dumpResult, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // a dump in flight finishes (it cannot be interrupted)
	startDump := func(why string) {
		if t.dumping {
			t.again = true
			return
		}
		t.dumping, t.again = true, false
		t.during = map[uint32]logged{}
		t.log.Debug("counting conntrack flows", "why", why)
		hint := len(t.flows)
		wg.Add(1)
		go func() {
			defer wg.Done()
			dumped <- t.dump(hint)
		}()
	}
	startDump("subscribed")
	reconcile := t.clock.NewTimer(t.every)
	defer reconcile.Stop()
	tick := t.clock.NewTimer(passive.TickEvery)
	defer tick.Stop()
	for {
		select {
		case evs, ok := <-events:
			if !ok {
				if ctx.Err() == nil {
					t.log.Warn("conntrack event subscription ended; subscribing again")
					t.metrics.Lost()
				}
				if t.dumping {
					<-dumped
					t.dumping = false
				}
				return
			}
			if t.apply(evs) {
				t.metrics.Lost()
				t.log.Warn("conntrack events lost (socket buffer full); counting the table again")
				startDump("events lost")
			}
			if w := t.watch.Load(); w != nil {
				w.w.Events(evs, t.clock.Now())
			}
		case r := <-dumped:
			t.dumping = false
			if r.err != nil {
				t.log.Error("count conntrack flows; will retry", "err", r.err)
				reconcile.Reset(time.Second)
				continue
			}
			t.merge(r.flows)
			if t.again {
				startDump("events lost during the count")
			} else {
				reconcile.Reset(t.every)
			}
		case <-reconcile.C():
			startDump("periodic")
		case <-tick.C():
			if w := t.watch.Load(); w != nil {
				w.w.Tick(t.clock.Now())
			}
			tick.Reset(passive.TickEvery)
		}
	}
}

// Shared keeps one flow tracker running across reloads while the
// mark mask stays: a reload neither loses the counts and the passive
// detector's baselines nor waits for a dump in flight and starts another
// one (200k flows take seconds).
type Shared struct {
	mu     sync.Mutex
	t      *Tracker
	cancel context.CancelFunc
	done   chan struct{}
}

// Reuse is the running tracker if it counts under mask, else nil.
func (s *Shared) Reuse(mask uint32) *Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil && s.t.mask == mask {
		return s.t
	}
	return nil
}

// Run makes t the running tracker, stopping the one before.
func (s *Shared) Run(t *Tracker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t == t {
		return
	}
	s.stopLocked()
	ctx, cancel := context.WithCancel(context.Background())
	s.t, s.cancel, s.done = t, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		t.Run(ctx)
	}(s.done)
}

// Stop stops the running tracker.
func (s *Shared) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Shared) stopLocked() {
	if s.t != nil {
		s.cancel()
		<-s.done
		s.t = nil
	}
}

// dump reads the whole table, by ID.
func (t *Tracker) dump(hint int) dumpResult {
	var flows map[uint32]Key
	err := ct.RetryInterrupted(func() error {
		flows = make(map[uint32]Key, hint)
		return t.table.Walk(nil, ct.DetailCounters, func(r *ct.FlowRecord) {
			flows[r.ID] = Key{Mark: r.Mark & t.mask, Family: r.Family}
		})
	})
	return dumpResult{flows: flows, err: err}
}

// apply counts a batch of events. It returns whether the kernel reported
// lost events.
func (t *Tracker) apply(evs []ct.Event) (lost bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range evs {
		ev := &evs[i]
		t.metrics.Event(ev.Type)
		switch ev.Type {
		case ct.EventLost:
			lost = true
		case ct.EventNew, ct.EventUpdate:
			// An update of a flow never seen (it began before the
			// subscription, and the dump is not done) is a flow too.
			k := Key{Mark: ev.Mark & t.mask, Family: ev.Family}
			if old, ok := t.flows[ev.ID]; !ok || old != k {
				if ok {
					t.counts[old]--
				}
				t.counts[k]++
				t.flows[ev.ID] = k
			}
			if t.dumping {
				t.during[ev.ID] = logged{key: k}
			}
		case ct.EventDestroy:
			if old, ok := t.flows[ev.ID]; ok {
				t.counts[old]--
				delete(t.flows, ev.ID)
			}
			if t.dumping {
				t.during[ev.ID] = logged{gone: true}
			}
		}
	}
	return lost
}

// merge replaces the flows by a dump corrected with the events logged
// while it ran.
func (t *Tracker) merge(flows map[uint32]Key) {
	for id, l := range t.during {
		if l.gone {
			delete(flows, id)
		} else {
			flows[id] = l.key
		}
	}
	t.during = nil
	counts := map[Key]int64{}
	for _, k := range flows {
		counts[k]++
	}
	t.mu.Lock()
	var drift int64
	for k, n := range counts {
		drift += abs(n - t.counts[k])
	}
	for k, n := range t.counts {
		if _, ok := counts[k]; !ok {
			drift += abs(n)
		}
	}
	first := !t.ready
	t.counts, t.ready, t.flows = counts, true, flows
	t.mu.Unlock()
	if first {
		t.log.Info("counted conntrack flows", "flows", len(flows))
		return
	}
	t.metrics.Reconciled(drift)
	if drift > 0 {
		t.log.Info("corrected the flow counts", "flows", len(flows), "corrected", drift)
	}
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// Mask is the mark mask the tracker counts under.
func (t *Tracker) Mask() uint32 { return t.mask }

// SetMetrics makes the tracker count in m; only before Run (a reload
// hands a new tracker the metrics that go on counting).
func (t *Tracker) SetMetrics(m Metrics) { t.metrics = m }

// Metrics is what the tracker counts in.
func (t *Tracker) Metrics() Metrics { return t.metrics }

// Watch makes w see the events from now on (nil: none).
func (t *Tracker) Watch(w Watcher) {
	if w == nil {
		t.watch.Store(nil)
		return
	}
	t.watch.Store(&watchBox{w: w})
}

// Watcher is the watcher that sees the events (nil: none).
func (t *Tracker) Watcher() Watcher {
	if b := t.watch.Load(); b != nil {
		return b.w
	}
	return nil
}

// Tally is the flows per mark (and of them IPv6) from the counts; ok is
// false until the first dump is merged (and for a nil tracker).
func (t *Tracker) Tally() (tally status.Tally, ok bool) {
	counts, ready := t.Counts()
	if !ready {
		return nil, false
	}
	out := status.Tally{}
	for k, n := range counts {
		if n == 0 {
			continue
		}
		c := out[k.Mark]
		if c == nil {
			c = &status.Counters{}
			out[k.Mark] = c
		}
		c.Flows += n
		if k.Family == unix.AF_INET6 {
			c.FlowsIPv6 += n
		}
	}
	return out, true
}
