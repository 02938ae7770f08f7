package daemon

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/daemon/passive"
	"flowpin/lb/status"
	"flowpin/nft"
	"flowpin/nft/ct"
)

// ReconcileInterval is how often the daemon re-counts the conntrack table
// to correct its event-driven flow counts. Events are the source; this
// only catches drift (an event the kernel could not send). Lost events
// (a full socket) trigger a re-count at once.
const ReconcileInterval = 60 * time.Second

// flowKey is what a flow is counted under: its mark (under the mask)
// and its address family.
type flowKey struct {
	mark   uint32
	family uint8
}

// logged is the last thing the events said of a flow while a dump ran.
type logged struct {
	key  flowKey
	gone bool
}

type dumpResult struct {
	flows map[uint32]flowKey
	err   error
}

// flowTracker keeps the number of flows per mark and family from
// conntrack events, after one streamed dump, and re-counts periodically.
//
// The race between the dump and the events: the subscription exists
// before the dump starts, so no change is missed, and a flow may be seen
// twice (in the dump and as NEW) or die during the dump after the dump
// read it. Flows are therefore kept by conntrack ID, and while a dump
// runs every event is also logged by ID; when the dump ends, the new
// table is the dump overridden by the log (the log is later than the
// dump for every flow it names).
type flowTracker struct {
	table   FlowTable
	mask    uint32
	clock   Clock
	log     *slog.Logger
	metrics *Metrics
	space   int
	every   time.Duration
	// watch sees every batch of events after it is counted, and a tick
	// every passive.TickEvery (the passive failure detector of the daemon that
	// runs). Optional.
	watch atomic.Pointer[passiveWatch]

	// Owned by run's goroutine.
	flows   map[uint32]flowKey
	dumping bool
	during  map[uint32]logged // events seen while a dump runs
	again   bool              // events were lost during the dump: dump again after it

	mu     sync.Mutex
	counts map[flowKey]int64
	ready  bool // the first dump is merged
}

func newFlowTracker(table FlowTable, mask uint32, clock Clock, log *slog.Logger, m *Metrics, space int, every time.Duration) *flowTracker {
	return &flowTracker{
		table: table, mask: mask, clock: clock, log: log, metrics: m, space: space, every: every,
		flows: map[uint32]flowKey{}, counts: map[flowKey]int64{},
	}
}

// snapshot copies the counts; ok is false until the first dump is merged.
func (t *flowTracker) snapshot() (map[flowKey]int64, bool) {
	if t == nil {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.counts), t.ready
}

// run subscribes, dumps, and keeps counting until ctx ends. A lost
// subscription is replaced and the table dumped again.
func (t *flowTracker) run(ctx context.Context) {
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
func (t *flowTracker) consume(ctx context.Context, events <-chan []ct.Event) {
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
					t.metrics.ctEventsLost()
				}
				if t.dumping {
					<-dumped
					t.dumping = false
				}
				return
			}
			if t.apply(evs) {
				t.metrics.ctEventsLost()
				t.log.Warn("conntrack events lost (socket buffer full); counting the table again")
				startDump("events lost")
			}
			if w := t.watch.Load(); w != nil {
				w.events(evs, t.clock.Now())
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
				w.tick(t.clock.Now())
			}
			tick.Reset(passive.TickEvery)
		}
	}
}

// sharedFlows keeps one flow tracker running across reloads while the
// mark mask stays: a reload neither loses the counts and the passive
// detector's baselines nor waits for a dump in flight and starts another
// one (200k flows take seconds).
type sharedFlows struct {
	mu     sync.Mutex
	t      *flowTracker
	cancel context.CancelFunc
	done   chan struct{}
}

// reuse is the running tracker if it counts under mask, else nil.
func (s *sharedFlows) reuse(mask uint32) *flowTracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil && s.t.mask == mask {
		return s.t
	}
	return nil
}

// run makes t the running tracker, stopping the one before.
func (s *sharedFlows) run(t *flowTracker) {
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
		t.run(ctx)
	}(s.done)
}

func (s *sharedFlows) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *sharedFlows) stopLocked() {
	if s.t != nil {
		s.cancel()
		<-s.done
		s.t = nil
	}
}

// dump reads the whole table, by ID.
func (t *flowTracker) dump(hint int) dumpResult {
	var flows map[uint32]flowKey
	err := ct.RetryInterrupted(func() error {
		flows = make(map[uint32]flowKey, hint)
		return t.table.Walk(nil, ct.DetailCounters, func(r *ct.FlowRecord) {
			flows[r.ID] = flowKey{mark: r.Mark & t.mask, family: r.Family}
		})
	})
	return dumpResult{flows: flows, err: err}
}

// apply counts a batch of events. It returns whether the kernel reported
// lost events.
func (t *flowTracker) apply(evs []ct.Event) (lost bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range evs {
		ev := &evs[i]
		t.metrics.ctEvent(ev.Type)
		switch ev.Type {
		case ct.EventLost:
			lost = true
		case ct.EventNew, ct.EventUpdate:
			// An update of a flow never seen (it began before the
			// subscription, and the dump is not done) is a flow too.
			k := flowKey{mark: ev.Mark & t.mask, family: ev.Family}
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
func (t *flowTracker) merge(flows map[uint32]flowKey) {
	for id, l := range t.during {
		if l.gone {
			delete(flows, id)
		} else {
			flows[id] = l.key
		}
	}
	t.during = nil
	counts := map[flowKey]int64{}
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
	t.metrics.reconciled(drift)
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

// ErrCountsNotReady: the daemon has not finished its first count of the
// conntrack table (it just started), or does not follow conntrack; a
// status then counts from a dump (status.Collect).
var ErrCountsNotReady = status.ErrCountsNotReady

// FlowTally is the flows per mark from the daemon's memory, and each
// link's bytes and packets from its nft counters: O(links), whatever the
// number of flows. Bytes and packets are the link's traffic counted by
// its rules, carried over the table's rewrites, not those of the flows
// alive now.
func (d *Daemon) FlowTally() (status.Tally, error) {
	counts, ready := d.flows.snapshot()
	if !ready {
		return nil, ErrCountsNotReady
	}
	t := status.Tally{}
	get := func(mark uint32) *status.Counters {
		c := t[mark]
		if c == nil {
			c = &status.Counters{}
			t[mark] = c
		}
		return c
	}
	for k, n := range counts {
		if n != 0 {
			c := get(k.mark)
			c.Flows += n
			if k.family == unix.AF_INET6 {
				c.FlowsIPv6 += n
			}
		}
	}
	if d.deps.Traffic != nil {
		m, err := d.trafficCounters()
		if err != nil {
			return nil, err
		}
		for _, l := range d.Config.Links {
			out, in := linkTraffic(m, l.Name)
			c := get(l.Mark)
			c.BytesOut, c.PacketsOut = out.Bytes, out.Packets
			c.BytesIn, c.PacketsIn = in.Bytes, in.Packets
		}
	}
	return t, nil
}

var linkTraffic = nft.LinkTraffic
