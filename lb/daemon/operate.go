package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"

	"flowpin/lb/config"
	"flowpin/lb/daemon/board"
	"flowpin/lb/daemon/hooks"
	"flowpin/lb/daemon/operator"
	"flowpin/lb/daemon/quota"
	"flowpin/lb/health"
)

// Defaults of the quota part.
const (
	// QuotaInterval: the links' counters are read this often for their
	// quotas. A link may carry what it passes in this time beyond its
	// quota before it goes to standby.
	QuotaInterval = 2 * time.Second
	// QuotaSaveInterval: the counts are written to their file this
	// often (and on every exhaustion, renewal and exit), so a crash or a
	// power cut loses at most this much of the count.
	QuotaSaveInterval = time.Minute
)

// Operator errors: the API answers them as 404, 400 and 409.
var (
	ErrUnknownLink = errors.New("no such link")
	ErrBadMode     = errors.New("bad mode")
	ErrLastLink    = errors.New("refused")
)

// opRequest asks the loop to act on the operator's modes now.
type opRequest struct {
	why  string
	done chan error
}

// SetLink sets link name's operator mode and waits until the daemon has
// applied it. Without force, drain and down are refused when no other
// link would be left up and not taken out by the operator: that would
// leave new flows nowhere to go.
func (d *Daemon) SetLink(ctx context.Context, name string, m operator.Mode, force bool) (operator.Entry, error) {
	if _, ok := d.Config.LinkByName(name); !ok {
		var names []string
		for _, l := range d.Config.Links {
			names = append(names, l.Name)
		}
		// The name goes back as given: the client escapes what it prints
		// (status.Printable), once.
		return operator.Entry{}, fmt.Errorf("%w \"%s\" in the config (links: %s)", ErrUnknownLink, name, strings.Join(names, ", "))
	}
	if _, err := operator.ParseMode(string(m)); err != nil {
		return operator.Entry{}, fmt.Errorf("%w %v", ErrBadMode, err)
	}
	// The check and the store are one step: two drains at once, each
	// checked before the other was stored, left no link.
	d.setMu.Lock()
	e, err := d.checkAndSet(name, m, force)
	d.setMu.Unlock()
	if err != nil {
		return e, err
	}
	d.Log.Warn("operator set link mode", "link", name, "mode", m)
	req := opRequest{why: "operator: link " + name + " " + string(m), done: make(chan error, 1)}
	select {
	case d.ops <- req:
	case <-d.stopped:
		return e, errHandedOver
	case <-ctx.Done():
		return e, ctx.Err()
	}
	select {
	case err := <-req.done:
		if err != nil {
			return e, fmt.Errorf("mode set, but the sync that applies it failed (it is retried): %w", err)
		}
		return e, nil
	case <-d.stopped:
		return e, errHandedOver
	case <-ctx.Done():
		return e, ctx.Err()
	}
}

// checkAndSet refuses a drain or down that would leave no link (unless
// forced), and stores the mode; call with setMu held.
func (d *Daemon) checkAndSet(name string, m operator.Mode, force bool) (operator.Entry, error) {
	store := d.deps.Operator
	// Off the loop: the plan it last published, not the one it may be
	// writing now.
	applied := d.appliedPub.Load()
	if (m == operator.Drain || m == operator.Down) && !force {
		// Per family: a link that is the last of IPv6 is so whatever the
		// IPv4 sides of the others do.
		for _, v6 := range []bool{false, true} {
			carries, left := false, 0
			for _, u := range d.units {
				if u.v6 != v6 {
					continue
				}
				l := d.Config.Links[u.link]
				if l.Name == name {
					carries = true
					continue
				}
				if mm := store.Get(l.Name).Mode; mm != operator.Drain && mm != operator.Down && d.board.Up(d.key(u)) && d.usableIn(applied, u) {
					left++
				}
			}
			if carries && left == 0 {
				fam := "IPv4"
				if v6 {
					fam = "IPv6"
				}
				return operator.Entry{}, fmt.Errorf("%w: %s would leave no %s link to take new flows (every other link of the family is down, on standby, or drained or down by operator); --force does it anyway", ErrLastLink, name, fam)
			}
		}
	}
	return store.Set(name, m, d.deps.Clock.Now())
}

// errHandedOver: the daemon stopped (a reload, or for good) with the mode
// stored but not applied; Supervisor.SetLink takes it to the next one.
var errHandedOver = errors.New("the daemon stopped before it applied the mode")

// operate runs an operator's request on the loop: the overrides, then a
// sync at once, whose outcome is the answer.
func (d *Daemon) operate(req opRequest) {
	d.applyOverrides(hooks.CauseOperator)
	d.runner.RequestNow(req.why)
	why := d.runner.Due()
	err := d.sync(why)
	d.runner.Done(err)
	d.hookChanges()
	if err != nil {
		d.Log.Error("sync failed; will retry", "trigger", why, "in", d.runner.Backoff(), "err", err)
	}
	req.done <- err
}

// overrideFor is what the operator and the quota make of unit u: down or
// up by the operator, else standby while the quota is exhausted, else
// nothing (its checks decide; a drained link too, which only leaves the
// route: drained).
func (d *Daemon) overrideFor(u unit, now time.Time) *board.Override {
	l := d.Config.Links[u.link]
	e := d.deps.Operator.Get(l.Name)
	switch e.Mode {
	case operator.Down:
		return &board.Override{State: health.StateDown, Reason: e.Describe(), Since: e.Since}
	case operator.Up:
		return &board.Override{State: health.StateUp, Reason: e.Describe(), Since: e.Since}
	}
	if l.Quota != nil && d.deps.Quota.Exhausted(l.Name) {
		since := now
		if o, ok := d.board.Overridden(d.key(u)); ok && o.State == health.StateStandby {
			return &o // as it was: since then
		}
		us, _ := d.deps.Quota.Usage(l.Name, now)
		why := fmt.Sprintf("quota: %s of %s used (%s); a new period begins %s", humanize.Bytes(us.Used), humanize.Bytes(us.Bytes), l.Quota, us.PeriodEnd.Format("2006-01-02 15:04 MST"))
		if l.Quota.LastResort {
			why += "; the last resort while no other link can take new flows"
		}
		return &board.Override{State: health.StateStandby, Reason: why, Since: since}
	}
	return nil
}

// applyOverrides sets every unit's override as the operator's modes and
// the quotas say, and acts on those whose state changed (cause: who
// asked now). At start (quiet) they are only set: what they do was done
// before the restart or the reload, and the first sync applies them.
func (d *Daemon) applyOverrides(cause string) {
	now := d.deps.Clock.Now()
	for _, u := range d.units {
		l := d.Config.Links[u.link]
		k := d.key(u)
		changed, state, reason := d.board.SetOverride(k, d.overrideFor(u, now))
		if !changed {
			continue
		}
		if cause == "" {
			d.metrics.setState(l.Name, u.family(), state)
			continue
		}
		if state != health.StateUp {
			// Its flows are settled as a failed link's: deleted where
			// another link can take them.
			d.keep.Failed(k, now)
		}
		d.changed(l, u, state, reason, cause)
	}
}

// adoptOverrides, at start: gives the quota part the config's quotas,
// and sets the overrides.
func (d *Daemon) adoptOverrides() {
	d.deps.Quota.Configure(d.Config.Links)
	d.countQuotas()
	d.applyOverrides("")
}

// forgetRemoved forgets the operator's modes of links a reload removed;
// only once the config is applied, since a reload that fails goes back
// to the old config, links and modes.
func (d *Daemon) forgetRemoved() {
	names := make([]string, len(d.Config.Links))
	for i, l := range d.Config.Links {
		names[i] = l.Name
	}
	if gone, err := d.deps.Operator.Keep(names); len(gone) > 0 {
		d.Log.Warn("operator modes of links no longer in the config forgotten", "links", gone, "err", err)
	}
}

// drained are the links of a family the operator drained, with why: out
// of the route (no new flows), but their tables, rules and marks stay,
// so their established flows go on.
func (d *Daemon) drained(v6 bool) map[string]string {
	out := map[string]string{}
	for _, u := range d.units {
		if u.v6 != v6 {
			continue
		}
		l := d.Config.Links[u.link]
		if e := d.deps.Operator.Get(l.Name); e.Mode == operator.Drain {
			out[l.Name] = e.Describe()
		}
	}
	return out
}

// hasQuotas: some link has a quota to count.
func (d *Daemon) hasQuotas() bool {
	for _, l := range d.Config.Links {
		if l.Quota != nil {
			return true
		}
	}
	return false
}

// countQuotas reads the links' counters into the quota part and says
// whether a quota was exhausted or renewed.
func (d *Daemon) countQuotas() bool {
	if d.deps.Traffic == nil || !d.hasQuotas() {
		return false
	}
	now := d.deps.Clock.Now()
	raw, err := d.deps.Traffic.Counters()
	if err != nil {
		d.Log.Error("read the links' counters for their quotas", "err", err)
		return false
	}
	carried := d.carry.Traffic.Adjust(raw)
	readings := map[string]quota.Reading{}
	for _, l := range d.Config.Links {
		if l.Quota == nil {
			continue
		}
		co, ci := linkTraffic(carried, l.Name)
		ro, ri := linkTraffic(raw, l.Name)
		readings[l.Name] = quota.Reading{Carried: co.Bytes + ci.Bytes, Raw: ro.Bytes + ri.Bytes}
	}
	changes := d.deps.Quota.Count(now, readings)
	for _, ch := range changes {
		if ch.Exhausted {
			d.Log.Warn("quota exhausted: link to standby", "link", ch.Link, "used", ch.Usage.Used, "quota", ch.Usage.Bytes, "period_end", ch.Usage.PeriodEnd)
		} else {
			d.Log.Warn("quota renewed: link back", "link", ch.Link, "period_start", ch.Usage.PeriodStart)
		}
	}
	if len(changes) > 0 || now.Sub(d.quotaSaved) >= QuotaSaveInterval {
		d.saveQuotas(now)
	}
	return len(changes) > 0
}

func (d *Daemon) saveQuotas(now time.Time) {
	if err := d.deps.Quota.Save(); err != nil {
		d.Log.Error("save the quota counts", "err", err)
		return
	}
	d.quotaSaved = now
}

// quotaTick: the quota timer fired.
func (d *Daemon) quotaTick() {
	if d.countQuotas() {
		d.applyOverrides(hooks.CauseQuota)
	}
	d.quotaTimer.Reset(d.deps.QuotaInterval)
}

// quotaC fires when the quotas are due to be counted (never without one).
func (d *Daemon) quotaC() <-chan time.Time {
	if d.quotaTimer == nil {
		return nil
	}
	return d.quotaTimer.C()
}

// lastResorts are the links of a family on standby for their quota with
// quota_last_resort, but for those the operator drained: no new flows,
// whatever their quota says.
func (d *Daemon) lastResorts(v6 bool) []string {
	var out []string
	for _, u := range d.units {
		l := d.Config.Links[u.link]
		if u.v6 != v6 || l.Quota == nil || !l.Quota.LastResort || d.deps.Operator.Get(l.Name).Mode == operator.Drain {
			continue
		}
		if o, ok := d.board.Overridden(d.key(u)); ok && o.State == health.StateStandby {
			out = append(out, l.Name)
		}
	}
	return out
}

// operatorOf is what Health shows of link l's operator mode and quota.
func (d *Daemon) operatorOf(l config.Link, lh *health.LinkHealth, now time.Time) {
	if e := d.deps.Operator.Get(l.Name); e.Mode != operator.Auto {
		lh.Operator, lh.OperatorSince = string(e.Mode), e.Since
		if e.Mode == operator.Drain {
			lh.Reason = e.Describe() + "; checks: " + lh.Reason
		}
	}
	if us, ok := d.deps.Quota.Usage(l.Name, now); ok {
		lh.Quota = &health.QuotaUsage{
			Bytes: us.Bytes, Used: us.Used, Left: us.Left,
			PeriodStart: us.PeriodStart, PeriodEnd: us.PeriodEnd,
			Exhausted: us.Exhausted, LastResort: l.Quota.LastResort,
		}
	}
}

// operatorCollector serves the links' operator modes and quotas.
type operatorCollector struct {
	d                          *Daemon
	mode, qBytes, qUsed, qLeft *prometheus.Desc
}

func newOperatorCollector(d *Daemon) *operatorCollector {
	return &operatorCollector{
		d:      d,
		mode:   prometheus.NewDesc("flowpin_link_operator_mode", "1 for the link's operator mode (flowpin link NAME drain|down|up|auto), 0 for the others.", []string{"link", "mode"}, nil),
		qBytes: prometheus.NewDesc("flowpin_link_quota_bytes", "The link's quota per period, in bytes (both directions).", []string{"link"}, nil),
		qUsed:  prometheus.NewDesc("flowpin_link_quota_used_bytes", "Bytes the link carried in its quota's current period (both directions).", []string{"link"}, nil),
		qLeft:  prometheus.NewDesc("flowpin_link_quota_left_bytes", "Bytes left of the link's quota in the current period.", []string{"link"}, nil),
	}
}

func (oc *operatorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- oc.mode
	ch <- oc.qBytes
	ch <- oc.qUsed
	ch <- oc.qLeft
}

func (oc *operatorCollector) Collect(ch chan<- prometheus.Metric) {
	now := oc.d.deps.Clock.Now()
	for _, l := range oc.d.Config.Links {
		cur := oc.d.deps.Operator.Get(l.Name).Mode
		for _, m := range []operator.Mode{operator.Auto, operator.Drain, operator.Down, operator.Up} {
			ch <- prometheus.MustNewConstMetric(oc.mode, prometheus.GaugeValue, b2f(m == cur), l.Name, string(m))
		}
		if us, ok := oc.d.deps.Quota.Usage(l.Name, now); ok {
			ch <- prometheus.MustNewConstMetric(oc.qBytes, prometheus.GaugeValue, float64(us.Bytes), l.Name)
			ch <- prometheus.MustNewConstMetric(oc.qUsed, prometheus.GaugeValue, float64(us.Used), l.Name)
			ch <- prometheus.MustNewConstMetric(oc.qLeft, prometheus.GaugeValue, float64(us.Left), l.Name)
		}
	}
}

// SetLink sets a link's operator mode through the daemon running now
// (flowpin link), as Daemon.SetLink. A request that meets a reload (the
// daemon it reached stopped before applying it) goes on to the next
// daemon: that one may have read the modes before this one was stored,
// and would only show it, not apply it.
func (s *Supervisor) SetLink(ctx context.Context, name string, m operator.Mode, force bool) (operator.Entry, error) {
	d := s.Current()
	if d == nil {
		return operator.Entry{}, errors.New("the daemon is starting")
	}
	for {
		e, err := d.SetLink(ctx, name, m, force)
		if !errors.Is(err, errHandedOver) {
			return e, err
		}
		next, err := s.nextDaemon(ctx, d)
		if next == nil {
			// Stopped for good: the next start reads the mode.
			return e, err
		}
		// Checked and stored already: the next daemon only applies it
		// (or refuses a link its config no longer has).
		d, force = next, true
	}
}

// nextDaemon waits for a daemon other than d to run; nil when the
// supervisor ended.
func (s *Supervisor) nextDaemon(ctx context.Context, d *Daemon) (*Daemon, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if n := s.Current(); n != nil && n != d {
			return n, nil
		}
		select {
		case <-s.done:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}
