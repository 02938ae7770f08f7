package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
)

// ResyncInterval is the backstop: the daemon re-reads and repairs the
// kernel this often even when no notification arrived.
const ResyncInterval = time.Second

// Daemon keeps the kernel matching the config and routes around dead
// links. It runs in the network namespace it was started in.
type Daemon struct {
	Config *config.Config
	Kernel *apply.Kernel
	Log    *slog.Logger
	// OnReady, if set, is called once the first sync is done (systemd
	// notify).
	OnReady func()

	mu       sync.Mutex // guards trackers and gateways for readers
	trackers map[string]*health.Tracker
	gateways map[string]netip.Addr // the gateway each link last planned with
	usable   map[string]bool

	metrics *Metrics
	ct      *conntrack.Conn
}

// New prepares a daemon; Run starts it.
func New(c *config.Config, k *apply.Kernel, log *slog.Logger) *Daemon {
	return &Daemon{Config: c, Kernel: k, Log: log, trackers: map[string]*health.Tracker{}, gateways: map[string]netip.Addr{}, usable: map[string]bool{}, metrics: NewMetrics()}
}

// Metrics returns the daemon's Prometheus registry wrapper.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

type probeResult struct {
	link  int
	round health.Round
	at    time.Time
}

// Run applies the config, then keeps it applied until ctx ends. It leaves
// the kernel as last applied: `flowpin down` removes it.
func (d *Daemon) Run(ctx context.Context) error {
	ct, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("open conntrack: %w", err)
	}
	defer ct.Close()
	d.ct = ct

	if err := d.adopt(); err != nil {
		return err
	}
	if err := d.sync("start"); err != nil {
		return err
	}
	if d.OnReady != nil {
		d.OnReady()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	results := make(chan probeResult, 4*len(d.Config.Links))
	for i := range d.Config.Links {
		wg.Add(1)
		go func() { defer wg.Done(); d.probeLoop(ctx, i, results) }()
	}
	kick := make(chan string, 1)
	carrier := make(chan netlink.LinkUpdate, 64)
	neigh := make(chan netlink.NeighUpdate, 64)
	if err := d.watch(ctx, &wg, kick, carrier, neigh); err != nil {
		return err
	}

	resync := time.NewTicker(ResyncInterval)
	defer resync.Stop()
	// Notifications come in bursts (our own writes among them): sync once
	// per burst.
	var debounce <-chan time.Time
	pending := ""
	for {
		select {
		case <-ctx.Done():
			d.Log.Info("stopping; routing stays as last applied (flowpin down removes it)")
			return nil
		case r := <-results:
			d.observe(r)
		case u := <-carrier:
			d.onLink(u)
		case u := <-neigh:
			d.onNeigh(u)
		case why := <-kick:
			if debounce == nil {
				debounce = time.After(20 * time.Millisecond)
			}
			pending = why
		case <-debounce:
			debounce = nil
			d.syncLogged(pending)
		case <-resync.C:
			d.syncLogged("resync")
		}
	}
}

// adopt sets each link's starting state from the kernel: after a restart,
// a link that is in the multipath route is up and one that is not is down
// until its probes rise, so a restart moves no flow. With no flowpin state
// at all, every link starts up.
func (d *Daemon) adopt() error {
	owned, err := d.Kernel.Routes.Owned()
	if err != nil {
		return err
	}
	cur, err := d.Kernel.NFT.Read()
	if err != nil {
		return err
	}
	inRoute := map[string]bool{}
	for _, r := range owned.Routes {
		if r.Table != d.Config.BalanceTable {
			continue
		}
		if r.Dev != "" {
			inRoute[r.Dev] = true
		}
		for _, nh := range r.Nexthops {
			inRoute[nh.Dev] = true
		}
	}
	// A link that cannot work yet (no interface, no address, no gateway:
	// a WAN whose DHCP is not done at boot) is simply down.
	des, err := d.Kernel.PrepareWith(d.Config, plan.Options{MissingOK: true})
	if err != nil {
		return err
	}
	unusable := map[string]string{}
	for _, l := range des.Links {
		if !l.Usable {
			unusable[l.Name] = l.Why
		}
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.Config.Links {
		state, why := health.StateUp, "up: daemon started"
		if reason, ok := unusable[l.Name]; ok {
			state, why = health.StateDown, "down: "+reason
		} else if cur.Exists && !inRoute[l.Interface] {
			state, why = health.StateDown, "down: not in the multipath route when the daemon started"
		} else if cur.Exists {
			why = "up: adopted from the running kernel"
		}
		d.trackers[l.Name] = health.NewTracker(l.Check, state, now, why)
		d.metrics.setState(l.Name, state)
	}
	return nil
}

func (d *Daemon) downSet() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	down := map[string]string{}
	for name, t := range d.trackers {
		if t.State == health.StateDown {
			down[name] = t.Reason
		}
	}
	return down
}

func (d *Daemon) syncLogged(why string) {
	if err := d.sync(why); err != nil {
		d.Log.Error("sync failed; will retry", "trigger", why, "err", err)
	}
}

// sync plans with the current health and applies the difference.
func (d *Daemon) sync(why string) error {
	start := time.Now()
	des, err := d.Kernel.PrepareWith(d.Config, plan.Options{Down: d.downSet(), MissingOK: true})
	if err == nil {
		var res *apply.Result
		res, err = d.Kernel.Apply(des)
		if err == nil {
			d.metrics.synced(res.Writes, time.Since(start))
			if res.Writes > 0 {
				d.Log.Info("repaired kernel state", "trigger", why, "writes", res.Writes, "changes", res.Commands)
			}
		}
	}
	if err != nil {
		d.metrics.syncFailed()
		return err
	}
	d.mu.Lock()
	for _, l := range des.Links {
		if d.gateways[l.Name] != l.Gateway && l.Gateway.IsValid() {
			if old := d.gateways[l.Name]; old.IsValid() {
				d.Log.Info("gateway changed", "link", l.Name, "from", old, "to", l.Gateway)
			}
		}
		d.gateways[l.Name] = l.Gateway
		d.usable[l.Name] = l.Usable
	}
	d.mu.Unlock()
	return nil
}

// targets is what a link probes: its configured targets, or its gateway.
func (d *Daemon) targets(i int) []netip.Addr {
	l := d.Config.Links[i]
	if len(l.Check.Targets) > 0 {
		return l.Check.Targets
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if gw := d.gateways[l.Name]; gw.IsValid() {
		return []netip.Addr{gw}
	}
	return nil
}

// probeLoop runs one link's rounds on its own ticker; links are probed in
// parallel, and a slow round never delays the next one.
func (d *Daemon) probeLoop(ctx context.Context, i int, out chan<- probeResult) {
	l := d.Config.Links[i]
	var p *health.Prober
	defer func() {
		if p != nil {
			p.Close()
		}
	}()
	var mu sync.Mutex // the prober is replaced when its interface comes back
	tick := time.NewTicker(l.Check.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		tg := d.targets(i)
		mu.Lock()
		if p == nil {
			var err error
			if p, err = health.NewProber(l.Interface, l.Mark); err != nil {
				mu.Unlock()
				out <- probeResult{link: i, round: health.Round{Sent: max(len(tg), 1), Err: err}, at: time.Now()}
				continue
			}
		}
		prober := p
		mu.Unlock()
		if len(tg) == 0 {
			out <- probeResult{link: i, round: health.Round{Sent: 1, Err: errors.New("no target: no gateway known yet")}, at: time.Now()}
			continue
		}
		go func() {
			r := prober.Probe(tg, l.Check.Timeout)
			if r.Err != nil && errors.Is(r.Err, unix.ENODEV) {
				// The interface went away; bind a fresh socket next round.
				mu.Lock()
				if p == prober {
					p.Close()
					p = nil
				}
				mu.Unlock()
			}
			select {
			case out <- probeResult{link: i, round: r, at: time.Now()}:
			case <-ctx.Done():
			}
		}()
	}
}

func (d *Daemon) observe(r probeResult) {
	l := d.Config.Links[r.link]
	d.mu.Lock()
	t := d.trackers[l.Name]
	changed := t.Observe(r.round, l.Check.Quorum, r.at)
	state, reason := t.State, t.Reason
	d.metrics.probed(l.Name, r.round, t.Loss())
	d.mu.Unlock()
	if changed {
		d.changed(l, state, reason)
	}
}

// changed acts on a link's new state: route first, then flows.
func (d *Daemon) changed(l config.Link, state health.LinkState, reason string) {
	d.metrics.setState(l.Name, state)
	d.metrics.changed(l.Name)
	d.Log.Warn("link "+string(state), "link", l.Name, "interface", l.Interface, "reason", reason)
	// Out of (or back into) the multipath route: new flows go elsewhere
	// (or here again). Pinned flows on healthy links are untouched.
	d.syncLogged("link " + l.Name + " " + string(state))
	if state != health.StateDown {
		return
	}
	// Only this link's flows: their NAT binding is to an address that no
	// longer works, so they must re-establish on a live link. Every other
	// link's flows stay.
	f := conntrack.NewFilter().Mark(l.Mark).MarkMask(d.Config.MarkMask)
	if err := d.ct.FlushFilter(f); err != nil {
		d.Log.Error("flush the link's conntrack entries", "link", l.Name, "err", err)
		return
	}
	d.Log.Info("flushed the link's flows", "link", l.Name, "mark", fmt.Sprintf("%#x/%#x", l.Mark, d.Config.MarkMask))
}

func (d *Daemon) linkByIface(name string) (config.Link, bool) {
	for _, l := range d.Config.Links {
		if l.Interface == name {
			return l, true
		}
	}
	return config.Link{}, false
}

// onLink takes a link down at once when its carrier goes; probes bring it
// back. Any interface change also calls for a sync (addresses, state).
func (d *Daemon) onLink(u netlink.LinkUpdate) {
	a := u.Attrs()
	l, ok := d.linkByIface(a.Name)
	if !ok {
		return
	}
	lost := u.Header.Type == unix.RTM_DELLINK || a.Flags&unix.IFF_UP == 0 || u.IfInfomsg.Flags&unix.IFF_LOWER_UP == 0
	if lost {
		why := "carrier lost on " + a.Name
		if u.Header.Type == unix.RTM_DELLINK {
			why = "interface " + a.Name + " removed"
		}
		d.forceDown(l, why)
	}
	d.syncLogged("interface " + a.Name)
}

// onNeigh takes a link down at once when the kernel finds its gateway
// unreachable at layer 2.
func (d *Daemon) onNeigh(u netlink.NeighUpdate) {
	if u.State&netlink.NUD_FAILED == 0 {
		return
	}
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return
	}
	ip = ip.Unmap()
	for _, l := range d.Config.Links {
		d.mu.Lock()
		gw := d.gateways[l.Name]
		d.mu.Unlock()
		if gw == ip && linkIndex(l.Interface) == u.LinkIndex {
			d.forceDown(l, fmt.Sprintf("gateway %s unreachable (neighbour failed)", ip))
		}
	}
}

func linkIndex(name string) int {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return -1
	}
	return l.Attrs().Index
}

func (d *Daemon) forceDown(l config.Link, why string) {
	d.mu.Lock()
	t := d.trackers[l.Name]
	changed := t.ForceDown(why, time.Now())
	reason := t.Reason
	d.mu.Unlock()
	if changed {
		d.changed(l, health.StateDown, reason)
	}
}

// watch subscribes to every notification that can mean the kernel drifted
// from the plan: links, addresses, routes, rules, neighbours and nftables.
func (d *Daemon) watch(ctx context.Context, wg *sync.WaitGroup, kick chan<- string, carrier chan netlink.LinkUpdate, neigh chan netlink.NeighUpdate) error {
	done := ctx.Done()
	onErr := func(what string) func(error) {
		return func(err error) {
			if ctx.Err() != nil {
				return // closing the sockets on the way out
			}
			d.Log.Warn("netlink notifications", "what", what, "err", err)
		}
	}
	if err := netlink.LinkSubscribeWithOptions(carrier, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr("links")}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	if err := netlink.NeighSubscribeWithOptions(neigh, done, netlink.NeighSubscribeOptions{ErrorCallback: onErr("neighbours")}); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr("addresses")}); err != nil {
		return fmt.Errorf("subscribe to addresses: %w", err)
	}
	routes := make(chan netlink.RouteUpdate, 256)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr("routes")}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	// The library has no rule subscription; any message on the rule
	// groups is reason enough to sync.
	ruleSock, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE)
	if err != nil {
		return fmt.Errorf("subscribe to rules: %w", err)
	}
	nfmon := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectRuleset))
	nfc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	nfEvents, err := nfc.AddMonitor(nfmon)
	if err != nil {
		return fmt.Errorf("monitor nftables: %w", err)
	}

	send := func(why string) {
		select {
		case kick <- why:
		default:
		}
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case _, ok := <-addrs:
				if !ok {
					return
				}
				send("address change")
			case _, ok := <-routes:
				if !ok {
					return
				}
				send("route change")
			}
		}
	}()
	go func() {
		defer wg.Done()
		<-done
		ruleSock.Close()
		nfmon.Close()
	}()
	go func() {
		defer wg.Done()
		for {
			if _, _, err := ruleSock.Receive(); err != nil {
				return
			}
			send("ip rule change")
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range nfEvents {
			if ev.Error != nil {
				continue
			}
			var table *nftables.Table
			switch v := ev.Data.(type) {
			case *nftables.Table:
				table = v
			case *nftables.Chain:
				table = v.Table
			case *nftables.Rule:
				table = v.Table
			}
			// Only our own table: other programs' rulesets are theirs.
			if table != nil && table.Name == nft.TableName {
				send("nftables change")
			}
		}
	}()
	return nil
}

// Health is the daemon's view of every link, in config order.
func (d *Daemon) Health() []health.LinkHealth {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []health.LinkHealth
	for _, l := range d.Config.Links {
		t := d.trackers[l.Name]
		if t == nil {
			continue
		}
		out = append(out, health.LinkHealth{
			Name: l.Name, State: t.State, LastChange: t.LastChange, Reason: t.Reason,
			RTTMillis: float64(t.RTT.Microseconds()) / 1000, Loss: t.Loss(),
		})
	}
	return slices.Clip(out)
}
