package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/ctl"
	"flowpin/lb/daemon/board"
	"flowpin/lb/daemon/carry"
	"flowpin/lb/daemon/failback"
	"flowpin/lb/daemon/hooks"
	"flowpin/lb/daemon/keep"
	"flowpin/lb/daemon/ondemand"
	"flowpin/lb/daemon/operator"
	"flowpin/lb/daemon/passive"
	"flowpin/lb/daemon/quota"
	"flowpin/lb/daemon/resolv"
	"flowpin/lb/daemon/tally"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/rules"
)

// Defaults for Deps.
const (
	// ResyncInterval is the backstop: the daemon re-reads and repairs the
	// kernel this often even when no notification arrived. Notifications
	// are the trigger; this only catches one that was missed.
	ResyncInterval = 30 * time.Second
	// MinSyncInterval spaces syncs: the notifications of a burst (our own
	// writes among them) are folded into one sync.
	MinSyncInterval = 50 * time.Millisecond
)

// Deps are the daemon's handles on the kernel and on time. Applier and
// Conntrack are required; the rest default to the real thing.
type Deps struct {
	Applier Applier
	// Conntrack flushes a dead link's flows. The daemon uses this one
	// handle and dials none of its own.
	Conntrack Flusher
	Probers   ProberFactory // default KernelProbers
	// Hooks, if set, runs hooks and on-demand commands, shared across
	// reloads (default: one of the daemon's own).
	Hooks  *hooks.Runner
	Clock  Clock  // default RealClock
	Events Events // default KernelEvents of rules.Events and nft.TableEvents

	ResyncInterval  time.Duration // default ResyncInterval
	MinSyncInterval time.Duration // default MinSyncInterval

	// Flows, if set, is followed by events to keep flow counts per link
	// in memory (FlowTally, metrics) and to watch new flows for replies.
	Flows FlowTable
	// Traffic, if set, gives each link's bytes and packets, and
	// RuleHits the traffic rules' hits (both from nft counters, carried
	// over the table's rewrites: lb/daemon/carry).
	Traffic  TrafficCounters
	RuleHits RuleHitReader
	// FlowEventSpace is the event socket's receive buffer (default
	// ct.DefaultEventSpace).
	FlowEventSpace    int
	ReconcileInterval time.Duration // default ReconcileInterval
	// Passive tunes the detection of dead links from their own new
	// flows (with Flows only; zero value: passive.Default).
	Passive passive.Params

	// Operator holds the operators' link modes (flowpin link), and Quota
	// counts the links' quotas; both outlive reloads, and each nil is
	// one in memory (lb/daemon/operate.go).
	Operator *operator.Store
	Quota    *quota.Book
	// QuotaInterval: how often the quotas are counted (default
	// QuotaInterval).
	QuotaInterval time.Duration
	// ResolvDir is where the resolv file of the links' DNS servers is
	// written (default resolv.DefaultDir); Resolv, if set, is its writer,
	// shared across reloads.
	ResolvDir string
	Resolv    *resolv.Writer

	// Watchdog, if set, is called from the loop at least every
	// WatchdogInterval while the loop turns (systemd's WATCHDOG=1): a
	// loop stuck anywhere stops the pings, and systemd restarts the
	// daemon.
	Watchdog         func()
	WatchdogInterval time.Duration

	// Parts are the daemon's parts; each one nil is built from the
	// config. A Supervisor's daemons share those set here across reloads.
	Parts Parts

	// probes, if set, are the probe loops, and flowsShared the flow
	// tracker, shared across reloads (default: the daemon's own).
	probes      *probeLoops
	flowsShared *tally.Shared
	carry       *carry.Set
}

// Parts are the parts the daemon's loop feeds. The interfaces are what
// the loop asks of them, so a test can put one of its own in their place.
type Parts struct {
	Board    *board.Board // the links' health
	Keep     *keep.Flows  // the fate of down links' flows
	Failback Failback     // default failback.New()
	OnDemand OnDemand     // default ondemand.New(Deps.Clock)
}

// Failback follows the policies' active tiers (lb/daemon/failback).
type Failback interface {
	// Applied takes the plan just applied and says what changed.
	Applied(des *plan.Desired, links []config.Link, open [2]bool) []failback.Step
	Policies() []plan.PolicyPlan
}

// OnDemand follows the on-demand links (lb/daemon/ondemand).
type OnDemand interface {
	// Follow takes the links' health after a sync and says what to do.
	Follow(c *config.Config, linkUp func(name string) bool) []ondemand.Action
	// C fires when a keep time ends.
	C() <-chan time.Time
	Standby(name string) bool
	Stop()
}

// Daemon keeps the kernel matching the config and routes around dead
// links. It runs in the network namespace it was started in.
//
// It is the loop: it owns the links' health and the one sync scheduler
// (syncRunner), and feeds what happens to its parts, each in a package of
// its own that cannot reach back into it: failback (the policies' tiers),
// ondemand, passive (detection from the flows), hooks (the hook runner),
// tally (the flow counts), keep (the fate of a down link's flows) and
// carry (the nft counters over rewrites). The parts own their state and
// return decisions (flows to flush, commands to run, what to log), which
// the loop carries out; so each is tested on its own.
type Daemon struct {
	Config *config.Config
	Log    *slog.Logger
	// OnReady, if set, is called once the subscriptions are live and the
	// first sync is done (systemd notify).
	OnReady func()

	deps Deps

	// board is the links' health, keyed by unitKey: a link's address
	// families are judged on their own (lb/daemon/board).
	board *board.Board
	// units are the links' families, in config order: what is probed.
	units []unit

	// Owned by Run's goroutine.
	runner *syncRunner
	// keep decides the fate of down links' flows and whether a family's
	// route fails open (lb/daemon/keep).
	keep *keep.Flows
	// applied is the plan last applied.
	applied *plan.Desired
	// appliedPub is applied as published for readers off the loop (an
	// operator's request); never changed once published.
	appliedPub atomic.Pointer[plan.Desired]
	// intentPub is what the plan last applied was planned with beyond the
	// config, for GET /intent (verify); never changed once published.
	intentPub atomic.Pointer[ctl.Intent]
	// setCheck: the file sets whose elements the next sync checks.
	setCheck *fileSetCheck
	// held6: the prefixes the prefixes6: auto link had in that plan
	// (prefixes6.go).
	held6 held6
	// tiers follows the policies' active tiers (failback).
	tiers Failback

	metrics *Metrics
	carry   *carry.Set     // the nft counters' offsets (lb/daemon/carry)
	flows   *tally.Tracker // nil without Deps.Flows
	watch   *passiveWatch  // the flow tracker's, once Run starts

	// hooks runs on_change hooks and on-demand commands (nil before Run).
	hooks        *hooks.Runner
	pendingHooks hooks.Pending
	// inherit: what the daemon before a reload left (reload.go).
	inherit *handover
	// handover: stopped by a reload, not for good.
	handover atomic.Bool
	// od is the on-demand part.
	od OnDemand

	// ops are the operator's requests (SetLink) to the loop; stopped is
	// closed when Run returned.
	ops     chan opRequest
	stopped chan struct{}
	// setMu makes SetLink's check and store of a mode one step.
	setMu sync.Mutex
	// quotaTimer fires when the quotas are due to be counted (nil: no
	// quota); quotaSaved is when their file was last written.
	quotaTimer Timer
	quotaSaved time.Time
	// role: the HA role as of the last sync (role.go); read by status.
	roleMu sync.Mutex
	role   plan.Role

	// loops[u] is unit u's probe loop (probes.go), once Run took them
	// over; owned by Run's goroutine.
	loops []*probeLoop

	// resolv writes the resolv file (dns.go); leaseSeen is what the
	// last read of each dns: auto lease found, to log changes only.
	resolv    *resolv.Writer
	leaseSeen map[string]string
	// dns is what the last write of the resolv file made of each link's
	// servers, for Health and the metrics (other goroutines).
	dns atomic.Pointer[dnsView]
}

// New prepares a daemon; Run starts it.
func New(c *config.Config, deps Deps, log *slog.Logger) *Daemon {
	if deps.Probers == nil {
		deps.Probers = KernelProbers
	}
	if deps.Clock == nil {
		deps.Clock = RealClock{}
	}
	if deps.Events == nil {
		deps.Events = KernelEvents{Routing: rules.Events{Log: log}, Table: nft.TableEvents{}}
	}
	if deps.ResyncInterval <= 0 {
		deps.ResyncInterval = ResyncInterval
	}
	if deps.MinSyncInterval <= 0 {
		deps.MinSyncInterval = MinSyncInterval
	}
	if deps.ReconcileInterval <= 0 {
		deps.ReconcileInterval = tally.ReconcileInterval
	}
	if deps.carry == nil {
		deps.carry = carry.NewSet()
	}
	if deps.Operator == nil {
		deps.Operator, _ = operator.Open("")
	}
	if deps.Quota == nil {
		deps.Quota, _ = quota.Open("")
	}
	if deps.QuotaInterval <= 0 {
		deps.QuotaInterval = QuotaInterval
	}
	if deps.Resolv == nil {
		dir := deps.ResolvDir
		if dir == "" {
			dir = resolv.DefaultDir
		}
		deps.Resolv = &resolv.Writer{Dir: dir}
	}
	p := deps.Parts
	if p.Board == nil {
		p.Board = board.New()
	}
	if p.Keep == nil {
		p.Keep = keep.New()
	}
	if p.Failback == nil {
		p.Failback = failback.New()
	}
	if p.OnDemand == nil {
		p.OnDemand = ondemand.New(deps.Clock)
	}
	d := &Daemon{
		Config: c, Log: log, deps: deps,
		board: p.Board, keep: p.Keep, tiers: p.Failback, od: p.OnDemand, units: units(c),
		metrics: NewMetrics(), carry: deps.carry, resolv: deps.Resolv,
		ops: make(chan opRequest), stopped: make(chan struct{}),
		setCheck: newFileSetCheck(),
	}
	if err := d.metrics.registerOwned(newDNSCollector(d)); err != nil {
		panic(err) // a programming error: one per daemon
	}
	if err := d.metrics.registerOwned(newOperatorCollector(d)); err != nil {
		panic(err) // a fresh registry
	}
	if deps.Flows != nil {
		if deps.flowsShared != nil {
			d.flows = deps.flowsShared.Reuse(c.MarkMask)
		}
		if d.flows == nil {
			d.flows = tally.New(deps.Flows, c.MarkMask, deps.Clock, log, flowMetrics{d.metrics}, deps.FlowEventSpace, deps.ReconcileInterval)
		}
		if err := d.metrics.registerOwned(newFlowCollector(d)); err != nil {
			panic(err) // a fresh registry
		}
		p := deps.Passive
		if p == (passive.Params{}) {
			p = passive.Default
		}
		slots := make([]passive.Slot, len(d.units))
		for i, u := range d.units {
			slots[i] = passive.Slot{Mark: c.Links[u.link].Mark, V6: u.v6}
		}
		det := passive.NewDetector(p, c.MarkMask, slots)
		if w, _ := d.flows.Watcher().(*passiveWatch); w != nil && w.det.SameSlots(det) {
			// A reload that kept the links: the baselines go on.
			det = w.det
		}
		d.watch = &passiveWatch{det: det, suspect: d.suspect}
	}
	return d
}

// inheritMetrics carries prev's metrics over a reload, so counters go on
// counting and /metrics shows no reset: prev's own collectors leave the
// registry for d's, and the series of links, families and policies d's
// config no longer has are deleted. Call it before Run.
func (d *Daemon) inheritMetrics(prev *Daemon) {
	m := prev.metrics
	m.handOver()
	for _, c := range d.metrics.handOver() {
		if err := m.registerOwned(c); err != nil {
			panic(err) // the old daemon's are gone
		}
	}
	d.metrics = m
	if d.flows != nil && d.flows.Metrics() != (flowMetrics{m}) {
		d.flows.SetMetrics(flowMetrics{m}) // a new tracker, not yet running
	}
	m.prune(d.Config)
}

// Metrics returns the daemon's Prometheus registry wrapper.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

type probeResult struct {
	loop  *probeLoop
	unit  int // the loop's unit, set by the daemon that takes the result
	round health.Round
	// start and at: when the round began and ended.
	start, at time.Time
	burst     bool // a burst on suspicion (burstRound), not a regular round
}

// unit is one address family of one link: each is probed and judged on
// its own, so an ISP's IPv6 can be down while its IPv4 works.
type unit struct {
	link int
	v6   bool
}

// key is u's unitKey.
func (d *Daemon) key(u unit) string { return unitKey(d.Config.Links[u.link].Name, u.v6) }

func (u unit) family() string {
	if u.v6 {
		return "ipv6"
	}
	return "ipv4"
}

// unitKey names a unit: the link's name for IPv4, NAME/ipv6 for IPv6.
func unitKey(name string, v6 bool) string {
	if v6 {
		return name + "/ipv6"
	}
	return name
}

func units(c *config.Config) []unit {
	var out []unit
	for i, l := range c.Links {
		if l.HasV4() {
			out = append(out, unit{link: i})
		}
		if l.HasV6() {
			out = append(out, unit{link: i, v6: true})
		}
	}
	return out
}

// familyOf is the address family constant of a unit, for conntrack.
func (u unit) af() uint8 {
	if u.v6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// Run applies the config, then keeps it applied until ctx ends. It leaves
// the kernel as last applied: `flowpin down` removes it. Every goroutine
// it starts has ended when it returns.
func (d *Daemon) Run(ctx context.Context) error {
	defer close(d.stopped)
	if err := d.adopt(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: a panic below still stops everything
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Subscribe before the first sync, so no change after it is missed.
	events, err := d.deps.Events.Subscribe(ctx)
	if err != nil {
		return fmt.Errorf("subscribe to kernel notifications: %w", err)
	}
	defer func() {
		cancel()
		drain(events)
	}()
	if d.flows != nil {
		d.flows.Watch(d.watch)
		if sh := d.deps.flowsShared; sh != nil {
			sh.Run(d.flows)
		} else {
			wg.Add(1)
			go func() { defer wg.Done(); d.flows.Run(ctx) }()
		}
	}
	if d.hooks = d.deps.Hooks; d.hooks == nil {
		d.hooks = hooks.NewRunner(d.Config.Hooks.Timeout, d.Log)
		defer d.hooks.Stop()
	}
	d.runner = newSyncRunner(d.deps.Clock, d.deps.MinSyncInterval, d.deps.ResyncInterval)
	defer d.runner.Stop()
	defer d.od.Stop()
	d.runner.Due()
	err = d.sync("start")
	d.runner.Done(err)
	if err != nil {
		return err
	}
	d.hookChanges() // of changes before a reload
	d.forgetRemoved()
	if d.OnReady != nil {
		d.OnReady()
	}

	probes := d.deps.probes
	if probes == nil {
		probes = newProbeLoops()
		defer probes.stop()
	}
	d.loops = probes.take(d)
	bursts := make(map[string]chan<- struct{}, len(d.loops))
	for i, lp := range d.loops {
		bursts[d.key(d.units[i])] = lp.burst
	}
	d.board.Arm(bursts)
	if d.hasQuotas() && d.deps.Traffic != nil {
		d.quotaTimer = d.deps.Clock.NewTimer(d.deps.QuotaInterval)
		defer func() {
			// The count up to the exit (or the reload) is kept.
			d.quotaTimer.Stop()
			d.countQuotas()
			d.saveQuotas(d.deps.Clock.Now())
		}()
	}
	return d.loop(ctx, &events, probes.out)
}

// drain waits for a subscription to finish closing after its context
// ended (nil: none is open).
func drain(events <-chan Event) {
	if events == nil {
		return
	}
	for range events {
	}
}

// loop is the daemon's one goroutine that acts: it owns the runner, the
// trackers' transitions and the subscription (*events, replaced when it
// is lost).
func (d *Daemon) loop(ctx context.Context, events *<-chan Event, results <-chan probeResult) error {
	resub := d.deps.Clock.NewTimer(0)
	resub.Stop()
	defer resub.Stop()
	// The watchdog's ping comes from this loop, between the things it
	// does, not from a goroutine of its own: a ticker would go on pinging
	// while the loop hangs in a sync or a full channel.
	var wdC <-chan time.Time
	var ping func()
	if d.deps.Watchdog != nil && d.deps.WatchdogInterval > 0 {
		wd := d.deps.Clock.NewTimer(0)
		defer wd.Stop()
		wdC = wd.C()
		ping = func() {
			// Re-armed first: a test that sees the ping and moves the
			// clock on finds the timer armed.
			wd.Reset(d.deps.WatchdogInterval)
			d.deps.Watchdog()
		}
	}
	resubBackoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			if d.handover.Load() {
				d.Log.Info("handing over to the reloaded config")
			} else {
				d.Log.Info("stopping; routing stays as last applied (flowpin down removes it)")
			}
			return nil
		case r := <-results:
			if r.unit = slices.Index(d.loops, r.loop); r.unit < 0 {
				continue // of a loop this daemon did not take
			}
			if r.burst {
				d.burstDone(r)
			} else {
				d.observe(r)
			}
			d.settleFlows()
		case ev, ok := <-*events:
			if ok {
				d.onEvent(ev)
				continue
			}
			// The subscription ended (an overflow; its EventLost asked
			// for the re-read already). Subscribe again at once.
			*events = nil
			if ctx.Err() != nil {
				continue
			}
			resubBackoff = 0
			resub.Reset(0)
		case <-resub.C():
			ch, err := d.deps.Events.Subscribe(ctx)
			if err != nil {
				resubBackoff = min(max(2*resubBackoff, time.Second), d.deps.ResyncInterval)
				d.Log.Error("subscribe to kernel notifications; will retry", "in", resubBackoff, "err", err)
				resub.Reset(resubBackoff)
				continue
			}
			*events = ch
			d.Log.Info("subscribed to kernel notifications again")
			d.runner.RequestNow("subscribed again")
		case <-d.runner.C():
			d.takeQueued(*events)
			d.runSync()
		case <-d.od.C():
			d.runner.Request("on-demand keep time")
		case req := <-d.ops:
			d.operate(req)
		case <-d.quotaC():
			d.quotaTick()
		case <-wdC:
			ping()
		}
	}
}

// maxFolded bounds the notifications takeQueued handles before a sync,
// so that a storm that never ends still lets syncs run.
const maxFolded = 1 << 14

// takeQueued handles the notifications already queued when a sync is
// due: the sync reads the kernel after all of them, so each is folded
// into it. Otherwise a burst bigger than what the loop takes between two
// syncs (writing a table of 1000 traffic rules is thousands of
// notifications, flowpin's own write among them) went one or two per
// sync, each sync re-reading the whole table: the daemon synced back to
// back for minutes, a core busy and probe results waiting.
func (d *Daemon) takeQueued(events <-chan Event) {
	for range maxFolded {
		select {
		case ev, ok := <-events:
			if !ok {
				return // the loop sees the closed channel next
			}
			d.onEvent(ev)
		default:
			return
		}
	}
}

func (d *Daemon) runSync() {
	why := d.runner.Due()
	err := d.sync(why)
	d.runner.Done(err)
	d.hookChanges()
	if err != nil {
		d.Log.Error("sync failed; will retry", "trigger", why, "in", d.runner.Backoff(), "err", err)
	}
}

// adopt sets each link's starting state from the kernel: after a restart,
// a link that is in the multipath route is up and one that is not is down
// until its probes rise, so a restart moves no flow. With no flowpin state
// at all, every link starts up.
func (d *Daemon) adopt() error {
	owned, cur, err := d.deps.Applier.Current()
	if err != nil {
		return err
	}
	inRoute := map[string]bool{} // unitKey(interface, v6)
	for _, r := range owned.Routes {
		if r.Table != d.Config.BalanceTable {
			continue
		}
		v6 := r.Family == rules.V6
		if r.Dev != "" {
			inRoute[unitKey(r.Dev, v6)] = true
		}
		for _, nh := range r.Nexthops {
			inRoute[unitKey(nh.Dev, v6)] = true
		}
	}
	// The default policy's route holds its active tier only: a link of a
	// higher tier is out of it because it is on standby, not because it
	// was down.
	activeTier := map[bool]int{false: math.MaxInt, true: math.MaxInt}
	for _, u := range d.units {
		l := d.Config.Links[u.link]
		if inRoute[unitKey(l.Interface, u.v6)] {
			activeTier[u.v6] = min(activeTier[u.v6], l.Tier)
		}
	}
	// A link that cannot work yet (no interface, no address, no gateway:
	// a WAN whose DHCP is not done at boot) is simply down.
	des, err := d.deps.Applier.PrepareWith(d.Config, plan.Options{MissingOK: true})
	if err != nil {
		return err
	}
	unusable := map[string]string{}
	for _, l := range des.Links {
		if !l.Usable {
			unusable[unitKey(l.Name, false)] = l.Why
		}
		if !l.V6.Usable {
			unusable[unitKey(l.Name, true)] = l.V6.Why
		}
	}
	now := d.deps.Clock.Now()
	for _, u := range d.units {
		l := d.Config.Links[u.link]
		state, why := health.StateUp, "up: daemon started"
		if reason, ok := unusable[unitKey(l.Name, u.v6)]; ok {
			state, why = health.StateDown, "down: "+reason
		} else if cur.Exists && !inRoute[unitKey(l.Interface, u.v6)] && l.Tier <= activeTier[u.v6] && d.deps.Operator.Get(l.Name).Mode == operator.Auto {
			// Out of the route by the operator's mode is no sign of
			// failure; by a quota, the override says so.
			state, why = health.StateDown, "down: not in the multipath route when the daemon started"
		} else if cur.Exists {
			why = "up: adopted from the running kernel"
		}
		t := d.inherited(unitKey(l.Name, u.v6), l.Check)
		if t == nil {
			t = health.NewTracker(l.Check, state, now, why)
		}
		d.board.Add(unitKey(l.Name, u.v6), t)
		d.metrics.setState(l.Name, u.family(), t.State)
	}
	d.inheritHooks()
	d.adoptOverrides()
	return nil
}

// sync plans with the current health and applies the difference. Links
// that went down have their flows flushed only once it succeeded (until
// the multipath route no longer offers the link, a flushed flow would
// simply be pinned to it again), and only where another link can take
// them (lb/daemon/keep).
func (d *Daemon) sync(why string) error {
	start := d.deps.Clock.Now()
	auto := d.leaseDNS()
	opts := plan.Options{Down: d.failOpen(false), Down6: d.failOpen(true), MissingOK: true, DNS: auto, Held6: d.heldPrefixes6()}
	des, err := d.deps.Applier.PrepareWith(d.Config, opts)
	if err != nil {
		d.metrics.syncFailed()
		return err
	}
	// The role is the node's addresses as just read, whether or not the
	// apply succeeds: hooks run after a failed sync too, and a demoted
	// node must not run them as the primary.
	d.followRole(des)
	// Before the apply, which may fail and be retried: the file follows
	// the plan either way.
	d.writeResolv(des, auto)
	d.setCheck.narrow(&des.NFT)
	d.beginWrite()
	res, err := d.deps.Applier.Apply(des)
	if err == nil && res.Writes > 0 {
		// A repair may have read the kernel in the middle of the change
		// that triggered it (`ip rule flush` deletes one rule at a time):
		// it put back what was gone then, and the rest would wait for
		// the next sync, MinSyncInterval later, long enough for a pinned
		// flow's packet to leave by main's default route and lose its
		// NAT binding. One more pass puts back what the change took
		// since; it writes nothing when the first pass saw it whole.
		if again, err2 := d.deps.Applier.Apply(des); err2 == nil && again.Writes > 0 {
			res.Writes += again.Writes
			res.Commands = append(res.Commands, again.Commands...)
			res.Table = res.Table || again.Table
		}
	}
	d.endWrite(err == nil && res.Table)
	if err != nil {
		d.metrics.syncFailed()
		return err
	}
	d.setCheck.done(&des.NFT)
	d.metrics.synced(res.Writes, d.deps.Clock.Now().Sub(start))
	// The plan's own warnings (the first ones) are the planner's to say;
	// the rest are the apply's: a flush that failed, or with ha marks
	// that moved under live flows.
	if len(res.Warnings) > len(des.Warnings) {
		for _, w := range res.Warnings[len(des.Warnings):] {
			d.Log.Warn(w, "trigger", why)
		}
	}
	d.metrics.setPrefixes6(des)
	if res.Writes > 0 {
		d.Log.Info("repaired kernel state", "trigger", why, "writes", res.Writes, "changes", res.Commands)
	}
	for _, l := range des.Links {
		if old := d.board.SetGateway(unitKey(l.Name, false), l.Gateway); old.IsValid() && l.Gateway.IsValid() && old != l.Gateway {
			d.Log.Info("gateway changed", "link", l.Name, "from", old, "to", l.Gateway)
		}
		d.board.SetGateway(unitKey(l.Name, true), l.V6.Gateway)
	}
	for _, msg := range prefixChanges(d.applied, des) {
		d.Log.Info(msg)
	}
	d.applied = des
	d.appliedPub.Store(des)
	// Copies: the maps are keep's and the loop's, read off the loop here.
	d.intentPub.Store(&ctl.Intent{Down: maps.Clone(opts.Down), Down6: maps.Clone(opts.Down6), Held6: slices.Clone(opts.Held6)})
	d.held6 = heldOf(d.Config, des)
	d.settleFlows()
	d.failback(des)
	d.onDemandLinks()
	return nil
}

// failback acts on what the failback part (lb/daemon/failback) makes of
// the plan just applied: each policy's active tier, per family. When a
// higher tier is back, a policy with failback: flush has its own flows of
// that family deleted on the links of the tiers below (found by the
// policy's ct label), so they re-establish on the active tier; other
// policies' flows on those links, and the other family's, stay. With
// keep, they stay until they end.
func (d *Daemon) failback(des *plan.Desired) {
	for _, s := range d.tiers.Applied(des, d.Config.Links, d.keep.Open()) {
		if s.Started {
			d.metrics.tierStarted(s.Policy, s.Family, s.To)
			continue
		}
		d.Log.Info("policy tier changed", "policy", s.Policy, "family", s.Family, "from", failback.TierName(s.From), "to", failback.TierName(s.To))
		d.metrics.tierChanged(s.Policy, s.Family, s.To)
		for _, f := range s.Flushes {
			n, err := d.deps.Conntrack.FlushLabel(f.Mark, d.Config.MarkMask, f.Label, f.AF)
			if err != nil {
				d.Log.Error("failback: flush the policy's flows", "policy", s.Policy, "link", f.Link, "family", s.Family, "err", err)
				continue
			}
			d.Log.Info("failback: flushed the policy's flows on a lower tier", "policy", s.Policy, "link", f.Link, "family", s.Family, "flows", n)
		}
	}
}

// Policies are the policies as last applied, with their active tiers.
func (d *Daemon) Policies() []plan.PolicyPlan { return d.tiers.Policies() }

// flushFlows deletes only this link's flows: their NAT binding is to an
// address that no longer works, so they must re-establish on a live link
// (flushDown checks there is one). Every other link's flows stay.
// A link with both families loses only the failed family's flows.
func (d *Daemon) flushFlows(l config.Link, u unit) {
	var err error
	if l.HasV4() && l.HasV6() {
		err = d.deps.Conntrack.FlushMarkFamily(l.Mark, d.Config.MarkMask, u.af())
	} else {
		err = d.deps.Conntrack.FlushMark(l.Mark, d.Config.MarkMask)
	}
	if err != nil {
		d.Log.Error("flush the link's conntrack entries", "link", l.Name, "family", u.family(), "err", err)
		return
	}
	d.Log.Info("flushed the link's flows", "link", l.Name, "family", u.family(), "mark", fmt.Sprintf("%#x/%#x", l.Mark, d.Config.MarkMask))
}

func (d *Daemon) observe(r probeResult) {
	u := d.units[r.unit]
	l := d.Config.Links[u.link]
	s := d.board.Observe(unitKey(l.Name, u.v6), r.round, l.Check.Quorum, r.at)
	d.metrics.probed(l.Name, u.family(), r.round, s)
	if s.Bad > 0 {
		d.keep.Failed(unitKey(l.Name, u.v6), r.start)
	}
	if s.Changed {
		d.changed(l, u, s.State, s.Reason, hooks.CauseHealth)
	}
}

// changed acts on a unit's new state: route first, then flows. cause is
// who changed it (hooks.Cause*).
func (d *Daemon) changed(l config.Link, u unit, state health.LinkState, reason, cause string) {
	d.metrics.setState(l.Name, u.family(), state)
	d.metrics.changed(l.Name, u.family())
	d.Log.Warn("link "+string(state), "link", l.Name, "family", u.family(), "interface", l.Interface, "reason", reason, "cause", cause)
	// Out of (or back into) the multipath route: new flows go elsewhere
	// (or here again). Pinned flows on healthy links are untouched.
	k := unitKey(l.Name, u.v6)
	if state == health.StateDown || state == health.StateStandby {
		d.keep.Down(k)
	} else {
		d.keep.Up(k)
	}
	d.pendingHooks.Add(hooks.Change{Link: l, V6: u.v6, State: state, Reason: reason, Cause: cause})
	d.runner.Request("link " + l.Name + " " + u.family() + " " + string(state))
}

// linksByIface are the links on interface name: more than one when
// modems share it.
func (d *Daemon) linksByIface(name string) []int {
	var out []int
	for i, l := range d.Config.Links {
		if l.Interface == name {
			out = append(out, i)
		}
	}
	return out
}

// onEvent handles one kernel notification. A link whose carrier goes is
// down at once and probes bring it back; a gateway the kernel cannot
// resolve takes its link down at once; any change may mean drift.
func (d *Daemon) onEvent(ev Event) {
	switch ev.Kind {
	case EventLink:
		links := d.linksByIface(ev.Iface)
		if len(links) == 0 {
			return
		}
		for _, i := range links {
			if ev.Removed {
				for ui, u := range d.units {
					if u.link == i {
						d.loops[ui].reopen.Store(true)
					}
				}
				d.forceDown(d.Config.Links[i], "interface "+ev.Iface+" removed", nil)
			} else if !ev.Up {
				d.forceDown(d.Config.Links[i], "carrier lost on "+ev.Iface, nil)
			}
		}
		d.runner.Request("interface " + ev.Iface)
	case EventNeigh:
		// A link that shares its interface knows its gateway's packets by
		// the gateway's link-layer address: a new one (a modem replaced)
		// rewrites its rules.
		if d.applied == nil {
			return
		}
		for _, l := range d.applied.NFT.Links {
			if l.Shared && l.Iface == ev.Iface && (l.Nexthop == ev.IP || l.Nexthop6 == ev.IP) && !slices.Contains(l.MACs, ev.MAC) {
				d.runner.Request(fmt.Sprintf("gateway %s of link %s is now %s", ev.IP, l.Name, ev.MAC))
				return
			}
		}
	case EventNeighFailed:
		v6 := ev.IP.Is6() && !ev.IP.Is4In6()
		for _, l := range d.Config.Links {
			if gw := d.board.Gateway(unitKey(l.Name, v6)); gw == ev.IP && l.Interface == ev.Iface {
				d.forceDown(l, fmt.Sprintf("gateway %s unreachable (neighbour failed)", ev.IP), &v6)
			}
		}
	case EventDrift:
		if ev.Set != "" {
			var spec *nft.Spec
			if d.applied != nil {
				spec = &d.applied.NFT
			}
			if !d.setCheck.changed(spec, ev.Set) {
				return
			}
		}
		d.runner.Request(ev.What)
	case EventLost:
		d.setCheck.lost()
		d.metrics.subscriptionLost(ev.What)
		d.Log.Warn("kernel notifications lost; re-reading the kernel", "what", ev.What)
		d.runner.RequestNow("notifications lost: " + ev.What)
	}
}

// forceDown takes the link's units down at once: both families, or with
// only the one *only names.
func (d *Daemon) forceDown(l config.Link, why string, only *bool) {
	for _, u := range d.units {
		if d.Config.Links[u.link].Name != l.Name || (only != nil && *only != u.v6) {
			continue
		}
		now := d.deps.Clock.Now()
		changed, reason := d.board.ForceDown(unitKey(l.Name, u.v6), why, now)
		d.keep.Failed(unitKey(l.Name, u.v6), now)
		if changed {
			d.changed(l, u, health.StateDown, reason, hooks.CauseHealth)
		}
	}
}

// Intent is what the plan last applied was planned with beyond the
// config: the links out of the multipath routes and why, and the IPv6
// prefixes held for a link that is down. False before the first sync
// applied.
func (d *Daemon) Intent() (ctl.Intent, bool) {
	in := d.intentPub.Load()
	if in == nil {
		return ctl.Intent{}, false
	}
	return *in, true
}

// Health is the daemon's view of every link, in config order.
func (d *Daemon) Health() []health.LinkHealth {
	var out []health.LinkHealth
	now := d.deps.Clock.Now()
	for _, u := range d.units {
		l := d.Config.Links[u.link]
		t, ok := d.board.View(unitKey(l.Name, u.v6))
		if !ok {
			continue
		}
		state := t.State
		if state != health.StateUp && d.od.Standby(l.Name) {
			state = health.StateStandby
		}
		lh := health.LinkHealth{
			Name: l.Name, Family: u.family(), State: state, LastChange: t.LastChange, Reason: t.Reason,
			RTTMillis: millis(t.RTT), JitterMillis: millis(t.Jitter), Loss: t.Loss, Window: t.Rounds,
		}
		if k, ok := d.keep.Kept(unitKey(l.Name, u.v6)); ok {
			lh.FlowsKept, lh.FlowsKeptSince = k.Why, k.Since
		}
		d.operatorOf(l, &lh, now)
		lh.DNS = d.dnsOf(l.Name)
		out = append(out, lh)
	}
	return slices.Clip(out)
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
