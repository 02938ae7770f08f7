package daemon

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/health"
)

// probeLoops runs the units' probe loops, one per unit key, and outlives
// a daemon: a reload that leaves a link's probing as it was keeps the
// link's loop, so its rhythm and the round under way go on and the result
// reaches the daemon that runs by then. Before, each reload stopped every
// loop, dropped the rounds under way and started the next round a whole
// interval later, so with frequent reloads a dead link was never judged.
type probeLoops struct {
	out chan probeResult // every loop's results, read by the daemon that runs

	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	loops  map[string]*probeLoop
	wg     sync.WaitGroup
}

func newProbeLoops() *probeLoops {
	ctx, cancel := context.WithCancel(context.Background())
	return &probeLoops{out: make(chan probeResult, 64), ctx: ctx, cancel: cancel, loops: map[string]*probeLoop{}}
}

// stop ends every loop and waits for them.
func (p *probeLoops) stop() {
	p.cancel()
	p.wg.Wait()
}

// probeLoop runs one unit's rounds. A unit's own rounds run one at a
// time, so their results arrive in order, and a round longer than the
// interval delays the next one instead of overlapping it. The prober
// belongs to its goroutine.
type probeLoop struct {
	key  string
	link config.Link // as the loop was started: its probing is the same in the configs of the daemons that take it over
	v6   bool
	// owner is the daemon the loop works for: its gateways are the
	// targets, its clock and probers are used.
	owner atomic.Pointer[Daemon]
	// burst asks for a burst of probes at once (passive.go).
	burst chan struct{}
	// reopen: the interface was removed; the prober's socket is bound to
	// a device that is gone.
	reopen atomic.Bool
	cancel context.CancelFunc
}

// sameProbing: a loop started for link a probes as one for b would.
// Fall, rise and the quality limits are the tracker's, not the loop's.
func sameProbing(a, b config.Link) bool {
	ca, cb := a.Check, b.Check
	for _, c := range []*config.HealthCheck{&ca, &cb} {
		c.Fall, c.Rise, c.Quorum, c.MaxRTT, c.MaxLoss, c.Window, c.HoldDown = 0, 0, 0, 0, 0, 0, 0
	}
	return a.Interface == b.Interface && a.Mark == b.Mark && reflect.DeepEqual(ca, cb)
}

// take gives d the loops of its units, in the order of d.units: those
// that probe as d's config says are kept, the others started anew, and
// the loops of units d does not have stopped. Results of a loop d did not
// take are dropped by d.
func (p *probeLoops) take(d *Daemon) []*probeLoop {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*probeLoop, len(d.units))
	keep := map[string]bool{}
	for i, u := range d.units {
		l := d.Config.Links[u.link]
		k := unitKey(l.Name, u.v6)
		keep[k] = true
		if old := p.loops[k]; old != nil {
			if sameProbing(old.link, l) {
				old.owner.Store(d)
				out[i] = old
				continue
			}
			old.cancel()
		}
		out[i] = p.start(d, k, l, u.v6)
	}
	for k, old := range p.loops {
		if !keep[k] {
			old.cancel()
			delete(p.loops, k)
		}
	}
	return out
}

// start runs a loop for unit k; call with mu held.
func (p *probeLoops) start(d *Daemon, k string, l config.Link, v6 bool) *probeLoop {
	ctx, cancel := context.WithCancel(p.ctx)
	lp := &probeLoop{key: k, link: l, v6: v6, burst: make(chan struct{}, 1), cancel: cancel}
	lp.owner.Store(d)
	p.loops[k] = lp
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		lp.run(ctx, p.out)
	}()
	return lp
}

func (lp *probeLoop) run(ctx context.Context, out chan<- probeResult) {
	interval := lp.link.Check.Interval
	clock := lp.owner.Load().deps.Clock
	var pr Prober
	defer func() {
		if pr != nil {
			pr.Close()
		}
	}()
	t := clock.NewTimer(interval)
	defer t.Stop()
	for {
		burst := false
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-lp.burst:
			burst = true
		}
		start := clock.Now()
		var r health.Round
		if burst {
			r = lp.burstRound(&pr)
		} else {
			r = lp.round(&pr)
		}
		select {
		case out <- probeResult{loop: lp, round: r, start: start, at: clock.Now(), burst: burst}:
		case <-ctx.Done():
			return
		}
		if !burst { // the regular rounds keep their rhythm
			t.Reset(max(interval-clock.Now().Sub(start), 0))
		}
	}
}

// open returns *p, opening a prober first if there is none (or the
// interface went away).
func (lp *probeLoop) open(p *Prober) error {
	if lp.reopen.Swap(false) && *p != nil {
		(*p).Close()
		*p = nil
	}
	if *p != nil {
		return nil
	}
	pr, err := lp.owner.Load().deps.Probers(lp.link, lp.v6)
	if err != nil {
		return err
	}
	*p = pr
	return nil
}

// probe sends one round with *p, closing it when its interface went away.
func (lp *probeLoop) probe(p *Prober, targets []netip.Addr, timeout time.Duration) health.Round {
	r := (*p).Probe(targets, timeout)
	if r.Err != nil && errors.Is(r.Err, unix.ENODEV) {
		// Bind a fresh socket next round.
		(*p).Close()
		*p = nil
	}
	return r
}

// round probes the unit once.
func (lp *probeLoop) round(p *Prober) health.Round {
	tg := lp.owner.Load().targets(lp.link, lp.v6)
	if err := lp.open(p); err != nil {
		return health.Round{Sent: max(len(tg), 1), Err: err}
	}
	if len(tg) == 0 {
		return health.Round{Sent: 1, Err: errors.New("no target: no gateway known yet")}
	}
	if gs, ok := (*p).(interface{ SetGateway(netip.Addr) }); ok {
		// The exec probe's FLOWPIN_GATEWAY: auto gateways change.
		gs.SetGateway(lp.owner.Load().board.Gateway(unitKey(lp.link.Name, lp.v6)))
	}
	return lp.probe(p, tg, lp.link.Check.Timeout)
}

// targets is what a link's family probes: its configured targets of that
// family, or its gateway of that family.
func (d *Daemon) targets(l config.Link, v6 bool) []netip.Addr {
	var tg []netip.Addr
	for _, a := range l.Check.Targets {
		if a.Is6() == v6 {
			tg = append(tg, a)
		}
	}
	if len(tg) > 0 {
		return tg
	}
	if gw := d.board.Gateway(unitKey(l.Name, v6)); gw.IsValid() {
		return []netip.Addr{gw}
	}
	return nil
}
