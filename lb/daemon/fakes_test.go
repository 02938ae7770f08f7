package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/apply"
	"flowpin/lb/clock/clocktest"
	"flowpin/lb/config"
	"flowpin/lb/daemon/tally/tallytest"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/ct/cttest"
	"flowpin/rules"
	"flowpin/rules/rulestest"
)

// fakeClock moves only when a test advances it.
type fakeClock = clocktest.Fake

func newFakeClock() *fakeClock { return clocktest.New() }

// transcript is what the fakes were asked to do, in order.
type transcript struct {
	mu    sync.Mutex
	lines []string
}

func (r *transcript) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *transcript) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// fakeKernel is the Applier and the Flusher. It plans with the real
// planner against interfaces the test controls and records each apply as
// the multipath route it would leave.
type fakeKernel struct {
	rec *transcript

	mu       sync.Mutex
	ifaces   map[string]rules.Iface
	applyErr error
	flushErr error
	// warnings, if set, are the next Apply's warnings.
	warnings []string
	owned    rules.State
	table    nft.Current
	// rewrite, if set, is what writing the nft table does (its counters
	// start again); Apply then writes it.
	rewrite func()
	// hold, if set, makes the next Apply say so on entered and wait for
	// hold to close: a sync that takes a while.
	hold, entered chan struct{}
	// ct, if set, is the conntrack table the deletions that look at
	// each flow act on.
	ct *cttest.Fake
	// rechecks: each Apply's nft.Spec.Recheck.
	rechecks [][]string
	// writes is what each Apply says it wrote: a repair when not zero.
	writes int
}

func (k *fakeKernel) setWrites(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.writes = n
}

// holdNextApply holds the next Apply until release is called; entered is
// closed once it runs.
func (k *fakeKernel) holdNextApply() (entered <-chan struct{}, release func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hold, k.entered = make(chan struct{}), make(chan struct{})
	hold := k.hold
	return k.entered, func() { close(hold) }
}

func newFakeKernel(rec *transcript, c *config.Config) *fakeKernel {
	k := &fakeKernel{rec: rec, ifaces: map[string]rules.Iface{}}
	for i, l := range c.Links {
		k.addIface(l, i)
	}
	return k
}

// addIface gives link l's interface an address next to its gateway.
func (k *fakeKernel) addIface(l config.Link, i int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ifc := rules.Iface{Name: l.Interface, Index: i + 2, Up: true}
	if l.Gateway.IsValid() {
		gw := l.Gateway.As4()
		gw[3]++
		ifc.Addrs = append(ifc.Addrs, netip.PrefixFrom(netip.AddrFrom4(gw), 24))
	}
	if l.Gateway6.IsValid() {
		gw := l.Gateway6.As16()
		gw[15]++
		ifc.Addrs = append(ifc.Addrs, netip.PrefixFrom(netip.AddrFrom16(gw), 64))
	}
	k.ifaces[l.Interface] = ifc
}

func (k *fakeKernel) removeIface(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.ifaces, name)
}

func (k *fakeKernel) setApplyErr(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applyErr = err
}

func (k *fakeKernel) PrepareWith(c *config.Config, o plan.Options) (*plan.Desired, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return plan.With(c, k.ifaces, o)
}

func (k *fakeKernel) Apply(d *plan.Desired) (*apply.Result, error) {
	k.mu.Lock()
	err := k.applyErr
	k.rechecks = append(k.rechecks, slices.Clone(d.NFT.Recheck))
	hold, entered := k.hold, k.entered
	k.hold, k.entered = nil, nil
	k.mu.Unlock()
	if hold != nil {
		close(entered)
		<-hold
	}
	var in, down []string
	for _, l := range d.Links {
		if l.InRoute {
			in = append(in, l.Name)
		} else {
			down = append(down, l.Name)
		}
	}
	line := fmt.Sprintf("apply route=[%s] out=[%s]", strings.Join(in, " "), strings.Join(down, " "))
	if slices.ContainsFunc(d.Links, func(l plan.LinkPlan) bool { return l.HasV6() }) {
		var in6, down6 []string
		for _, l := range d.Links {
			if l.V6.InRoute {
				in6 = append(in6, l.Name)
			} else if l.HasV6() {
				down6 = append(down6, l.Name)
			}
		}
		line += fmt.Sprintf(" route6=[%s] out6=[%s]", strings.Join(in6, " "), strings.Join(down6, " "))
	}
	if err != nil {
		k.rec.add("%s: FAILED", line)
		return nil, err
	}
	k.rec.add("%s", line)
	k.mu.Lock()
	rewrite := k.rewrite
	warnings := k.warnings
	k.warnings = nil
	writes := k.writes
	k.mu.Unlock()
	if rewrite != nil {
		rewrite()
		return &apply.Result{Table: true, Warnings: warnings, Writes: writes}, nil
	}
	return &apply.Result{Warnings: warnings, Writes: writes}, nil
}

func (k *fakeKernel) Current() (rules.State, *nft.Current, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.table
	return k.owned, &t, nil
}

func (k *fakeKernel) FlushMark(mark, mask uint32) error {
	k.mu.Lock()
	err := k.flushErr
	k.mu.Unlock()
	k.rec.add("flush mark %#x/%#x", mark, mask)
	return err
}

func (k *fakeKernel) FlushMarkFamily(mark, mask uint32, family uint8) error {
	k.mu.Lock()
	err := k.flushErr
	k.mu.Unlock()
	k.rec.add("flush mark %#x/%#x family %d", mark, mask, family)
	return err
}

func (k *fakeKernel) FlushLabel(mark, mask uint32, bit int, family uint8) (int, error) {
	k.mu.Lock()
	err := k.flushErr
	k.mu.Unlock()
	k.rec.add("flush mark %#x/%#x label %d family %d", mark, mask, bit, family)
	return 0, err
}

func (k *fakeKernel) FlushMarkExceptLabels(mark, mask uint32, family uint8, keep []int) (int, error) {
	k.mu.Lock()
	err := k.flushErr
	k.mu.Unlock()
	k.rec.add("flush mark %#x/%#x family %d except labels %v", mark, mask, family, keep)
	return 0, err
}

func (k *fakeKernel) FlushUnreplied(mark, mask uint32, family uint8, keep []int) (int, error) {
	k.mu.Lock()
	err, table := k.flushErr, k.ct
	k.mu.Unlock()
	k.rec.add("flush unreplied mark %#x/%#x family %d except labels %v", mark, mask, family, keep)
	if err != nil || table == nil {
		return 0, err
	}
	return table.FlushUnreplied(mark, mask, family, keep)
}

// fakeProbers hands out probers whose answers the test sets per
// interface.
type fakeProbers struct {
	mu       sync.Mutex
	good     map[string]bool
	block    map[string]chan struct{} // Probe waits on it when set
	calls    map[string]int
	inFlight map[string]int
	maxIn    map[string]int
	open     int
	closed   int
	missing  map[string]bool // the factory fails: no such device
	enodev   map[string]bool // Probe fails: the bound device is gone
}

func newFakeProbers(c *config.Config) *fakeProbers {
	p := &fakeProbers{good: map[string]bool{}, block: map[string]chan struct{}{}, calls: map[string]int{}, inFlight: map[string]int{}, maxIn: map[string]int{}, missing: map[string]bool{}, enodev: map[string]bool{}}
	for _, l := range c.Links {
		p.good[l.Interface] = true
		p.good[l.Interface+"/6"] = true
	}
	return p
}

func (p *fakeProbers) set(iface string, good bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.good[iface] = good
}

func (p *fakeProbers) setMissing(iface string, missing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.missing[iface] = missing
}

// opened counts the probers the factory gave out.
func (p *fakeProbers) opened() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *fakeProbers) count(iface string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[iface]
}

// factory keys an IPv6 prober's answers and counts by "IFACE/6".
func (p *fakeProbers) factory(l config.Link, v6 bool) (Prober, error) {
	iface := l.Interface
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.missing[iface] {
		return nil, fmt.Errorf("probe socket on %s: no such device", iface)
	}
	p.open++
	if v6 {
		iface += "/6"
	}
	return &fakeProber{p: p, iface: iface}, nil
}

type fakeProber struct {
	p      *fakeProbers
	iface  string
	closed bool
}

func (f *fakeProber) Probe(targets []netip.Addr, _ time.Duration) health.Round {
	p := f.p
	p.mu.Lock()
	if f.closed {
		p.mu.Unlock()
		panic("probe on a closed prober")
	}
	p.calls[f.iface]++
	p.inFlight[f.iface]++
	p.maxIn[f.iface] = max(p.maxIn[f.iface], p.inFlight[f.iface])
	block := p.block[f.iface]
	good := p.good[f.iface]
	enodev := p.enodev[f.iface]
	p.mu.Unlock()
	if block != nil {
		<-block
	}
	p.mu.Lock()
	p.inFlight[f.iface]--
	p.mu.Unlock()
	if enodev {
		return health.Round{Sent: len(targets), Err: fmt.Errorf("sendto: %w", unix.ENODEV)}
	}
	if good {
		return health.Round{Sent: len(targets), Answered: len(targets), RTT: time.Millisecond}
	}
	return health.Round{Sent: len(targets), Lost: targets}
}

func (f *fakeProber) Close() {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if f.closed {
		panic("prober closed twice")
	}
	f.closed = true
	f.p.closed++
}

// fakeEvents is the daemon's event subscription, fed, failed or lost by
// the test (rulestest.Stream is the mechanism).
type fakeEvents struct {
	rulestest.Stream[Event]
}

var errSubscribe = errors.New("subscribe: no buffer space available")

func (e *fakeEvents) count() int         { return e.Subscribed() }
func (e *fakeEvents) send(ev Event) bool { return e.Send(ev) }

// failNext makes the next n subscriptions fail.
func (e *fakeEvents) failNext(n int) { e.FailNext(n, errSubscribe) }

// lose ends the subscription as an overflow does: EventLost, then close.
func (e *fakeEvents) lose(what string) { e.End(Event{Kind: EventLost, What: what}) }

// fakeFlowTable is conntrack for the flow tally (tallytest).
type fakeFlowTable = tallytest.Table

var newFakeFlowTable = tallytest.New

// fakeTraffic is nft's rule counters.
type fakeTraffic map[string]nft.Counter

func (f fakeTraffic) Counters() (map[string]nft.Counter, error) { return f, nil }

// fakeCounters are nft's rule counters (links' and rules'), which the
// test moves and resets as a rewrite of the table does.
type fakeCounters struct {
	mu sync.Mutex
	m  map[string]nft.Counter
}

func (f *fakeCounters) add(key string, packets, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]nft.Counter{}
	}
	c := f.m[key]
	f.m[key] = nft.Counter{Packets: c.Packets + packets, Bytes: c.Bytes + bytes}
}

// reset zeroes every counter: the table's rules were replaced.
func (f *fakeCounters) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.m {
		f.m[k] = nft.Counter{}
	}
}

func (f *fakeCounters) Counters() (map[string]nft.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.m), nil
}

func (f *fakeCounters) RuleHits() (map[string]nft.Hits, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]nft.Hits{}
	for k, c := range f.m {
		if name, ok := strings.CutPrefix(k, "rule "); ok {
			out[name] = nft.Hits(c)
		}
	}
	return out, nil
}
