package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/daemon/failback"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

// checked is a dual-WAN config with health checks: fall 3, rise 2, a
// round every second.
const checked = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    weight: 1
    nat: true
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    weight: 1
    nat: true
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
`

type harness struct {
	t       *testing.T
	c       *config.Config
	clock   *fakeClock
	rec     *transcript
	k       *fakeKernel
	probers *fakeProbers
	events  *fakeEvents
	kernel  Events          // optional, set before start: the daemon's events instead of events
	flows   *fakeFlowTable  // optional: set before start
	traffic TrafficCounters // optional: set before start
	hits    RuleHitReader   // optional: set before start
	parts   Parts           // optional: set before start
	deps    func(*Deps)     // optional: set before start, edits the deps
	// optional, set before start: the probers instead of probers', the
	// watchdog and its interval; resolvDir is a fresh temporary one.
	factory    ProberFactory
	watchdog   func()
	wdInterval time.Duration
	resolvDir  string
	d          *Daemon
	ready      chan struct{}
	cancel     context.CancelFunc
	done       chan error
	stopped    sync.Once
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	c := configtest.MustParse(t, checked)
	h := &harness{t: t, c: c, clock: newFakeClock(), rec: &transcript{}, events: &fakeEvents{}, ready: make(chan struct{})}
	h.k = newFakeKernel(h.rec, c)
	h.probers = newFakeProbers(c)
	return h
}

// start runs the daemon and waits until it is ready.
func (h *harness) start() {
	h.t.Helper()
	h.run()
	select {
	case <-h.ready:
	case err := <-h.done:
		h.t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(5 * time.Second):
		h.t.Fatal("not ready")
	}
	// What the test does next happens after the start, as in life, not
	// in the same instant: a link that failed then failed after the
	// others were up.
	h.clock.Advance(time.Millisecond)
}

func (h *harness) run() {
	deps := Deps{
		Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events,
	}
	if h.kernel != nil {
		deps.Events = h.kernel
	}
	if h.flows != nil {
		deps.Flows = h.flows
	}
	deps.Traffic, deps.RuleHits = h.traffic, h.hits
	deps.Parts = h.parts
	if h.deps != nil {
		h.deps(&deps)
	}
	if h.factory != nil {
		deps.Probers = h.factory
	}
	if h.resolvDir == "" {
		h.resolvDir = h.t.TempDir()
	}
	deps.ResolvDir, deps.Watchdog, deps.WatchdogInterval = h.resolvDir, h.watchdog, h.wdInterval
	h.d = New(h.c, deps, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.d.OnReady = func() { close(h.ready) }
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.d.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	h.stopped.Do(func() {
		h.cancel()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			h.t.Fatal("Run did not return")
		}
	})
}

// eventually polls cond with short real sleeps.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: never happened; transcript:\n%s", what, strings.Join(h.rec.get(), "\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

// round advances the clock by one probe interval once every probe loop
// has armed its timer, and waits until the loop has taken every link's
// new round (the probe's call alone is not enough: its result reaches
// the loop a moment later, and a test that reads the state then read the
// state of before).
func (h *harness) round() {
	h.t.Helper()
	m := h.d.Metrics()
	taken := func(u unit) float64 {
		l := h.c.Links[u.link]
		return testutil.ToFloat64(m.probes.WithLabelValues(l.Name, u.family(), "answered")) +
			testutil.ToFloat64(m.probes.WithLabelValues(l.Name, u.family(), "lost"))
	}
	before := make([]float64, len(h.d.units))
	for i, u := range h.d.units {
		before[i] = taken(u)
	}
	// Each unit's probe timer: counted alone, since other timers (the
	// quota's, on-demand keep times) would make a count of all of them
	// with one loop still between its round and its re-arm.
	h.eventually("probe timers armed", func() bool { return h.clock.ArmedBy(probeLoopTimers) >= len(h.d.units) })
	h.clock.Advance(time.Second)
	for i, u := range h.d.units {
		h.eventually("round of "+h.d.key(u)+" taken", func() bool { return taken(u) > before[i] })
	}
}

// advanceSync moves the clock by MinSyncInterval once the loop is done
// with what it was handling (a notification, a probe round, an operator's
// request), so that the sync that asked for is armed: the runner arms its
// timer for a time it reckons from the clock, and a move of the clock in
// between left it armed a whole interval later, never fired. A
// notification that changes nothing is taken only between two of the
// loop's steps: its delivery says the step before is done. (Not with a
// buffered subscription, which takes it at once.) A loop stuck in a sync
// (holdNextApply) takes it only once released: after 5 s the clock moves
// anyway, and the notification waits.
func (h *harness) advanceSync() {
	h.t.Helper()
	taken := make(chan struct{})
	go func() {
		defer close(taken)
		h.events.send(Event{Kind: EventLink, Iface: "(no interface)"})
	}()
	select {
	case <-taken:
	case <-time.After(5 * time.Second):
	}
	h.clock.Advance(MinSyncInterval)
}

// waitRunnerArmed waits until the sync runner's timer is armed again
// after a sync: Done arms it (a failure's backoff counts from then), a
// moment after the apply the transcript shows.
func (h *harness) waitRunnerArmed() {
	h.t.Helper()
	h.eventually("the sync runner armed", func() bool { return h.clock.ArmedBy(".newSyncRunner") >= 1 })
}

func (h *harness) state(link string) health.LinkHealth {
	for _, l := range h.d.Health() {
		if l.Name == link {
			return l
		}
	}
	h.t.Fatalf("no link %s", link)
	return health.LinkHealth{}
}

func (h *harness) waitState(link string, s health.LinkState) {
	h.t.Helper()
	h.eventually(link+" "+string(s), func() bool { return h.state(link).State == s })
}

// waitTranscript waits until the transcript is want, then checks it stays
// so.
func (h *harness) waitTranscript(want ...string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := h.rec.get()
		if cmp.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) || len(got) > len(want) {
			h.t.Fatalf("transcript (-got +want):\n%s", cmp.Diff(got, want))
		}
		time.Sleep(time.Millisecond)
	}
}

// probeLoopTimers names the function that makes the probe loops' timers
// (clocktest's ArmedBy); loopTimers the loop's own (resubscribe, watchdog).
const (
	probeLoopTimers = ".(*probeLoop).run"
	loopTimers      = ".(*Daemon).loop"
)

const (
	both    = "apply route=[isp1 isp2] out=[]"
	isp2Out = "apply route=[isp1] out=[isp2]"
	flush2  = "flush mark 0x200/0xff00"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProbesTakeALinkDownThenBack(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)

	h.probers.set("wan2", false)
	h.round()
	h.round()
	if s := h.state("isp2"); s.State != health.StateUp {
		t.Fatalf("isp2 after 2 bad rounds of fall 3: %+v", s)
	}
	h.round()
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	// Out of the multipath route first, then its flows, never the
	// other way round.
	h.waitTranscript(both, isp2Out, flush2)
	if r := h.state("isp2").Reason; !strings.Contains(r, "1/1 probes lost to 203.0.113.10, 3 rounds") {
		t.Errorf("reason %q", r)
	}

	h.probers.set("wan2", true)
	h.round()
	h.round()
	h.waitState("isp2", health.StateUp)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2, both)
	if got := testutil.ToFloat64(h.d.Metrics().changes.WithLabelValues("isp2", "ipv4")); got != 2 {
		t.Errorf("state changes of isp2: %v", got)
	}
}

func TestCarrierLossTakesALinkDownAtOnce(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	if r := h.state("isp2").Reason; r != "down: carrier lost on wan2" {
		t.Errorf("reason %q", r)
	}
	// Another interface's change is only a reason to sync.
	h.events.send(Event{Kind: EventLink, Iface: "lan", Up: false})
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	if s := h.state("isp1"); s.State != health.StateUp {
		t.Errorf("isp1: %+v", s)
	}
}

// recordingFailback is a failback part that records the plans the loop
// fed it, which links each had in the route.
type recordingFailback struct {
	Failback
	mu     sync.Mutex
	inPlan [][]string
}

func (r *recordingFailback) Applied(des *plan.Desired, links []config.Link, open [2]bool) []failback.Step {
	var in []string
	for _, l := range des.Links {
		if l.InRoute {
			in = append(in, l.Name)
		}
	}
	r.mu.Lock()
	r.inPlan = append(r.inPlan, in)
	r.mu.Unlock()
	return r.Failback.Applied(des, links, open)
}

func (r *recordingFailback) plans() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.inPlan)
}

// The loop feeds an injected part the plan of each sync it applied.
func TestInjectedFailbackPartIsFedEachAppliedPlan(t *testing.T) {
	h := newHarness(t)
	fb := &recordingFailback{Failback: failback.New()}
	h.parts.Failback = fb
	h.start()
	h.waitTranscript(both)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	got := fb.plans()
	want := [][]string{{"isp1", "isp2"}, {"isp1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plans fed to the failback part (links in the route): %v, want %v", got, want)
	}
	if len(h.d.Policies()) == 0 {
		t.Error("Policies are not the injected part's")
	}
}

func TestNeighbourFailedTakesALinkDown(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	// Not the gateway, or not on the link's interface: nothing.
	h.events.send(Event{Kind: EventNeighFailed, Iface: "wan2", IP: netip.MustParseAddr("198.51.100.7")})
	h.events.send(Event{Kind: EventNeighFailed, Iface: "wan1", IP: netip.MustParseAddr("198.51.100.1")})
	h.events.send(Event{Kind: EventNeighFailed, Iface: "wan2", IP: netip.MustParseAddr("198.51.100.1")})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	if r := h.state("isp2").Reason; !strings.Contains(r, "gateway 198.51.100.1 unreachable (neighbour failed)") {
		t.Errorf("reason %q", r)
	}
	if s := h.state("isp1"); s.State != health.StateUp {
		t.Errorf("isp1: %+v", s)
	}
}

// A link's flows are flushed only once the sync that took it out of the
// multipath route succeeded: before, new flows would still be pinned to
// it. A failed sync is retried with backoff, not at once.
func TestFailedSyncDoesNotFlush(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.k.setApplyErr(errors.New("route replace: file exists"))
	h.probers.set("wan2", false) // so it stays down while time passes
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out+": FAILED")

	// Backoff: 1s, then 2s, counted from when the runner took the
	// failure (the transcript has it a moment before).
	h.waitRunnerArmed()
	h.clock.Advance(999 * time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	h.waitTranscript(both, isp2Out+": FAILED")
	h.clock.Advance(time.Millisecond)
	h.waitTranscript(both, isp2Out+": FAILED", isp2Out+": FAILED")
	h.waitRunnerArmed()
	h.clock.Advance(1999 * time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	h.waitTranscript(both, isp2Out+": FAILED", isp2Out+": FAILED")
	h.k.setApplyErr(nil)
	h.clock.Advance(time.Millisecond)
	h.waitTranscript(both, isp2Out+": FAILED", isp2Out+": FAILED", isp2Out, flush2)
	if got := testutil.ToFloat64(h.d.Metrics().syncErrors); got != 2 {
		t.Errorf("sync errors: %v", got)
	}
}

// Notifications in a burst are one sync; with none, the kernel is re-read
// only at the backstop.
func TestBurstIsOneSyncAndBackstopIsSlow(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	for range 50 {
		h.events.send(Event{Kind: EventDrift, What: "route change"})
	}
	h.advanceSync()
	h.waitTranscript(both, both)
	h.waitRunnerArmed() // the backstop counts from the sync, armed at its end
	h.clock.Advance(ResyncInterval - time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	h.waitTranscript(both, both)
	h.clock.Advance(time.Millisecond)
	h.waitTranscript(both, both, both)
}

// A repair can have read the kernel in the middle of the change that
// triggered it (ip rule flush deletes one rule at a time): a sync that
// wrote applies once more at once, not after MinSyncInterval, so the
// rest of the change is not left broken meanwhile; one that wrote
// nothing, once.
func TestRepairAppliesOnceMore(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.events.send(Event{Kind: EventDrift, What: "ip rule change"})
	h.advanceSync()
	h.waitTranscript(both, both)
	h.k.setWrites(3) // from here on every apply writes
	h.events.send(Event{Kind: EventDrift, What: "ip rule change"})
	h.advanceSync()
	h.waitTranscript(both, both, both, both)
	time.Sleep(20 * time.Millisecond)
	h.waitTranscript(both, both, both, both)
}

// Notifications queued while a sync runs are folded into the next sync,
// however long the sync took: writing a table of 1000 traffic rules is
// thousands of notifications, and taken one or two per sync, each sync
// re-reading that table, they kept the daemon syncing back to back for
// minutes.
func TestBurstQueuedDuringASyncIsOneSync(t *testing.T) {
	h := newHarness(t)
	h.events.Buffer = 1024
	h.start()
	h.waitTranscript(both)
	entered, release := h.k.holdNextApply()
	h.events.send(Event{Kind: EventDrift, What: "route change"})
	h.advanceSync()
	<-entered
	for range 500 {
		h.events.send(Event{Kind: EventDrift, What: "nftables change"})
	}
	h.clock.Advance(time.Second) // the sync took that long
	release()
	h.waitTranscript(both, both, both)
	// Nothing is left to sync for.
	time.Sleep(20 * time.Millisecond)
	h.advanceSync()
	time.Sleep(20 * time.Millisecond)
	h.waitTranscript(both, both, both)
}

// A lost subscription (a netlink socket that overflowed) is counted, the
// kernel is re-read at once, and the daemon subscribes again.
func TestLostSubscriptionResyncsAndResubscribes(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.events.failNext(1) // the first attempt to subscribe again fails
	h.events.lose("links")
	h.waitTranscript(both, both) // no clock advance: at once
	if got := testutil.ToFloat64(h.d.Metrics().subLosses.WithLabelValues("links")); got != 1 {
		t.Errorf("losses: %v", got)
	}
	// The retry to subscribe waits a second.
	h.eventually("second subscribe attempt", func() bool { return h.clock.ArmedBy(loopTimers) >= 1 })
	h.clock.Advance(time.Second)
	h.eventually("subscribed again", func() bool { return h.events.count() == 2 })
	h.waitTranscript(both, both, both)
	// And the new subscription works.
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.waitState("isp2", health.StateDown)
}

func TestSubscribeFailsRunReturnsNotReady(t *testing.T) {
	h := newHarness(t)
	h.events.failNext(1)
	h.run()
	select {
	case err := <-h.done:
		h.stopped.Do(func() {})
		if !errors.Is(err, errSubscribe) {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	select {
	case <-h.ready:
		t.Error("OnReady was called")
	default:
	}
	if got := h.rec.get(); len(got) != 0 {
		t.Errorf("synced without notifications: %v", got)
	}
}

func TestStartSyncFailsRunReturns(t *testing.T) {
	h := newHarness(t)
	h.k.setApplyErr(errors.New("nft: operation not permitted"))
	h.run()
	select {
	case err := <-h.done:
		h.stopped.Do(func() {})
		if err == nil || !strings.Contains(err.Error(), "not permitted") {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	select {
	case <-h.ready:
		t.Error("OnReady was called")
	default:
	}
}

// Rounds of one link never overlap, and nothing outlives Run: probers are
// closed once each, goroutines are gone (goleak in TestMain).
func TestSlowProbeRoundsDoNotOverlap(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.probers.block["wan1"] = release
	h.start()
	h.eventually("first round", func() bool { return h.clock.ArmedBy(probeLoopTimers) >= 2 })
	h.clock.Advance(time.Second)
	h.eventually("wan1 probing", func() bool { return h.probers.count("wan1") == 1 })
	for range 5 {
		h.clock.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	if n := h.probers.count("wan1"); n != 1 {
		t.Errorf("wan1 probed %d times while a round was in flight", n)
	}
	close(release)
	h.stop()
	h.probers.mu.Lock()
	defer h.probers.mu.Unlock()
	if h.probers.maxIn["wan1"] != 1 {
		t.Errorf("wan1 had %d rounds in flight", h.probers.maxIn["wan1"])
	}
	if h.probers.open != h.probers.closed {
		t.Errorf("%d probers opened, %d closed", h.probers.open, h.probers.closed)
	}
}

// A removed interface (a PPP session ending) takes its link down and the
// sync still succeeds; when the interface is back, the link is adopted
// and its probes bring it up.
func TestInterfaceRemovedAndBack(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.round() // opens both probers
	h.k.removeIface("wan2")
	h.probers.setMissing("wan2", true)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Removed: true})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	if r := h.state("isp2").Reason; r != "down: interface wan2 removed" {
		t.Errorf("reason %q", r)
	}
	h.round() // the prober of the removed device is closed; a new one fails

	h.k.addIface(h.c.Links[1], 1)
	h.probers.setMissing("wan2", false)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: true})
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2, isp2Out)
	h.round()
	h.round()
	h.waitState("isp2", health.StateUp)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2, isp2Out, both)
	h.probers.mu.Lock()
	defer h.probers.mu.Unlock()
	if h.probers.open != 3 {
		t.Errorf("opened %d probers, want 3 (wan1, wan2, wan2 again)", h.probers.open)
	}
}

// With an interface absent at start, the daemon starts with that link
// down and adopts it when the interface appears.
func TestStartsWithInterfaceAbsent(t *testing.T) {
	h := newHarness(t)
	h.k.removeIface("wan2")
	h.probers.setMissing("wan2", true)
	h.start()
	h.waitTranscript(isp2Out)
	if r := h.state("isp2").Reason; r != "down: interface wan2 does not exist" {
		t.Errorf("reason %q", r)
	}
	h.k.addIface(h.c.Links[1], 1)
	h.probers.setMissing("wan2", false)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: true})
	h.round()
	h.round()
	h.waitState("isp2", health.StateUp)
	h.advanceSync()
	h.eventually("isp2 in the route", func() bool {
		got := h.rec.get()
		return got[len(got)-1] == both
	})
}

// A probe that finds its device gone (ENODEV) closes that prober, once,
// and the next round opens a fresh one.
func TestProberReopenedAfterENODEV(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.round()
	h.probers.mu.Lock()
	h.probers.enodev["wan2"] = true
	h.probers.mu.Unlock()
	h.round()
	h.eventually("wan2's prober closed", func() bool {
		h.probers.mu.Lock()
		defer h.probers.mu.Unlock()
		return h.probers.closed == 1
	})
	h.probers.mu.Lock()
	h.probers.enodev["wan2"] = false
	h.probers.mu.Unlock()
	h.round()
	h.stop()
	h.probers.mu.Lock()
	defer h.probers.mu.Unlock()
	if h.probers.open != 3 || h.probers.closed != 3 {
		t.Errorf("%d probers opened, %d closed; want 3 and 3", h.probers.open, h.probers.closed)
	}
}

// A policy with failback: flush deletes its own flows on the lower tier
// (by its ct label) once the higher tier is back; the default policy
// (keep) deletes nothing, and the tier changes are counted.
func TestFailbackFlushesOnlyThePolicysFlows(t *testing.T) {
	h := newHarness(t)
	h.c.Policies = append(h.c.Policies, config.Policy{Name: "isp1-first", Tiers: [][]int{{0}, {1}}, LastResort: config.Unreachable, Failback: config.Flush})
	h.c.Rules = []config.Rule{{Name: "web", Policy: "isp1-first", Target: 1}}
	h.start()
	h.waitTranscript(both)

	h.probers.set("wan1", false)
	h.round()
	h.round()
	h.round()
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, "apply route=[isp2] out=[isp1]", "flush mark 0x100/0xff00")

	h.probers.set("wan1", true)
	h.round()
	h.round()
	h.waitState("isp1", health.StateUp)
	h.advanceSync()
	h.waitTranscript(both, "apply route=[isp2] out=[isp1]", "flush mark 0x100/0xff00", both, "flush mark 0x200/0xff00 label 0 family 2")
	if got := testutil.ToFloat64(h.d.Metrics().tierChanges.WithLabelValues("isp1-first", "ipv4")); got != 2 {
		t.Errorf("tier changes of isp1-first: %v", got)
	}
	if n := testutil.CollectAndCount(h.d.Metrics().tier); n != 2 {
		t.Errorf("flowpin_policy_active_tier: %d series, want 2 (IPv4 of two policies; no link has IPv6)", n)
	}
	if got := testutil.ToFloat64(h.d.Metrics().tier.WithLabelValues("isp1-first", "ipv4")); got != 1 {
		t.Errorf("active tier of isp1-first: %v", got)
	}
	if p := h.d.Policies(); len(p) != 2 || p[1].Active != 0 {
		t.Errorf("policies: %+v", p)
	}
}

// dualStackLinks are two dual-stack links, checked in each family.
const dualStackLinks = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    gateway6: 2001:db8:1::1
    nat: true
    check: {targets: [203.0.113.10, 2001:db8:ff::10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    gateway6: 2001:db8:2::1
    nat: true
    check: {targets: [203.0.113.10, 2001:db8:ff::10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
`

// Each family follows its own active tier: isp1's IPv6 fails and returns
// while its IPv4 works, and failback: flush deletes the policy's IPv6
// flows on isp2 only; its IPv4 tier never moved, so no IPv4 flow goes.
func TestFailbackFollowsEachFamily(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, dualStackLinks+`policies:
  - {name: isp1-first, tiers: [[isp1], [isp2]], failback: flush}
rules:
  - {name: web, proto: tcp, dst_ports: [443], policy: isp1-first}
`)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	all := "apply route=[isp1 isp2] out=[] route6=[isp1 isp2] out6=[]"
	h.waitTranscript(all)

	h.probers.set("wan1/6", false)
	h.round()
	h.round()
	h.round()
	h.advanceSync()
	v6down := "apply route=[isp1 isp2] out=[] route6=[isp2] out6=[isp1]"
	h.waitTranscript(all, v6down, "flush mark 0x100/0xff00 family 10")

	h.probers.set("wan1/6", true)
	h.round()
	h.round()
	h.advanceSync()
	h.waitTranscript(all, v6down, "flush mark 0x100/0xff00 family 10", all, "flush mark 0x200/0xff00 label 0 family 10")
	m := h.d.Metrics()
	if v4, v6 := testutil.ToFloat64(m.tierChanges.WithLabelValues("isp1-first", "ipv4")), testutil.ToFloat64(m.tierChanges.WithLabelValues("isp1-first", "ipv6")); v4 != 0 || v6 != 2 {
		t.Errorf("tier changes of isp1-first: ipv4 %v, ipv6 %v; want 0 and 2", v4, v6)
	}
}

// An ISP's IPv6 fails while its IPv4 works: only the IPv6 side leaves the
// IPv6 multipath route, only its IPv6 flows are flushed, and the health
// reports both families.
func TestIPv6FailsAlone(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, dualStackLinks)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	all := "apply route=[isp1 isp2] out=[] route6=[isp1 isp2] out6=[]"
	h.waitTranscript(all)

	h.probers.set("wan1/6", false)
	h.round()
	h.round()
	h.round()
	h.eventually("isp1 IPv6 down", func() bool {
		for _, l := range h.d.Health() {
			if l.Name == "isp1" && l.Family == "ipv6" {
				return l.State == health.StateDown
			}
		}
		return false
	})
	h.advanceSync()
	h.waitTranscript(all, "apply route=[isp1 isp2] out=[] route6=[isp2] out6=[isp1]", "flush mark 0x100/0xff00 family 10")
	if s := h.state("isp1"); s.State != health.StateUp || s.Family != "ipv4" {
		t.Errorf("isp1 IPv4: %+v", s)
	}
	if got := testutil.ToFloat64(h.d.Metrics().up.WithLabelValues("isp1", "ipv6")); got != 0 {
		t.Errorf("flowpin_link_up{isp1,ipv6} = %v", got)
	}
}

// Two modems on one interface: the daemon re-plans when a gateway's
// link-layer address changes (a modem replaced), so the rules that pin
// flows arriving from it follow; other neighbours' churn, or the address
// it already has, cause no sync.
func TestSharedGatewayNewMACResyncs(t *testing.T) {
	c := configtest.MustParse(t, `links:
  - {name: modem1, interface: wan0, gateway: 192.168.1.1, nat: true, check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms}}
  - {name: modem2, interface: wan0, gateway: 192.168.1.254, nat: true, check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms}}
`)
	h := &harness{t: t, c: c, clock: newFakeClock(), rec: &transcript{}, events: &fakeEvents{}, ready: make(chan struct{})}
	h.k = newFakeKernel(h.rec, c)
	gw2 := netip.MustParseAddr("192.168.1.254")
	h.k.mu.Lock()
	wan0 := h.k.ifaces["wan0"]
	wan0.Neighbours = map[netip.Addr]string{gw2: "02:00:00:00:00:fe"}
	h.k.ifaces["wan0"] = wan0
	h.k.mu.Unlock()
	h.probers = newFakeProbers(c)
	h.start()
	const applied = "apply route=[modem1 modem2] out=[]"
	h.waitTranscript(applied)

	h.events.send(Event{Kind: EventNeigh, Iface: "wan0", IP: netip.MustParseAddr("192.168.1.77"), MAC: "02:00:00:00:00:77"})
	h.events.send(Event{Kind: EventNeigh, Iface: "wan0", IP: gw2, MAC: "02:00:00:00:00:fe"})
	h.events.send(Event{Kind: EventNeigh, Iface: "lan", IP: gw2, MAC: "02:00:00:00:00:99"})
	h.advanceSync()
	time.Sleep(50 * time.Millisecond)
	if got := h.rec.get(); len(got) != 1 {
		t.Fatalf("neighbours that change nothing synced: %q", got)
	}

	h.k.mu.Lock()
	wan0.Neighbours = map[netip.Addr]string{gw2: "02:00:00:00:00:aa"}
	h.k.ifaces["wan0"] = wan0
	h.k.mu.Unlock()
	h.events.send(Event{Kind: EventNeigh, Iface: "wan0", IP: gw2, MAC: "02:00:00:00:00:aa"})
	h.advanceSync()
	h.waitTranscript(applied, applied)
}
