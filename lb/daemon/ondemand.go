package daemon

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"flowpin/lb/config"
	"flowpin/lb/daemon/hooks"
	"flowpin/lb/health"
)

// OnDemandRetry: an on-demand link that is needed but not up this long
// after its up command ran has the command run again.
const OnDemandRetry = 30 * time.Second

// onDemand is an on-demand link's state, owned by the loop's goroutine
// (standby is also read under mu by Health).
type onDemand struct {
	// up: its up command was run (or it was up when the daemon started)
	// and its down command has not been run since.
	up bool
	// upAt: when its up command last ran.
	upAt time.Time
	// higherSince: since when a higher tier has been up in every policy
	// that has the link, while it is up; zero when none is.
	higherSince time.Time
}

// onDemandLinks follows the active tiers after each sync: an on-demand
// link is brought up when no link of a tier above it is up in some policy
// that has it, and taken down once a higher tier has been up in every such
// policy for its keep time. While intentionally down it is "standby".
func (d *Daemon) onDemandLinks() {
	now := d.deps.Clock.Now()
	var next time.Duration
	for i, l := range d.Config.Links {
		if l.OnDemand == nil {
			continue
		}
		st := d.od[l.Name]
		if st == nil {
			// Up when the daemon started (its interface was up): it goes
			// down after keep if not needed; otherwise standby.
			st = &onDemand{up: d.linkUp(l.Name)}
			d.od[l.Name] = st
			d.setStandby(l, !st.up)
		}
		needed := d.neededOnDemand(i)
		switch {
		case needed && !st.up:
			st.up, st.upAt, st.higherSince = true, now, time.Time{}
			d.setStandby(l, false)
			d.Log.Warn("on-demand link needed: bringing it up", "link", l.Name, "command", l.OnDemand.Up)
			d.onDemandCommand(l, "up", l.OnDemand.Up)
			next = minPositive(next, OnDemandRetry)
		case needed:
			st.higherSince = time.Time{}
			if d.linkUp(l.Name) {
				continue
			}
			// Still not up (the command failed, the modem did not
			// register): run it again every OnDemandRetry.
			if left := OnDemandRetry - now.Sub(st.upAt); left > 0 {
				next = minPositive(next, left)
				continue
			}
			st.upAt = now
			d.Log.Warn("on-demand link still not up: running its up command again", "link", l.Name, "after", OnDemandRetry, "command", l.OnDemand.Up)
			d.onDemandCommand(l, "up", l.OnDemand.Up)
			next = minPositive(next, OnDemandRetry)
		case st.up && st.higherSince.IsZero():
			st.higherSince = now
			next = minPositive(next, l.OnDemand.Keep)
			d.Log.Info("on-demand link no longer needed: a higher tier is up", "link", l.Name, "down_in", l.OnDemand.Keep)
		case st.up:
			if left := l.OnDemand.Keep - now.Sub(st.higherSince); left > 0 {
				next = minPositive(next, left)
				continue
			}
			st.up, st.higherSince = false, time.Time{}
			d.setStandby(l, true)
			d.Log.Info("on-demand link: a higher tier has been up for its keep time; taking it down", "link", l.Name, "keep", l.OnDemand.Keep, "command", l.OnDemand.Down)
			// Its flows move back to the higher tier. Unlike a link judged
			// down, it is surely gone once its down command has run, so
			// its flows could not go on there even with nowhere else to
			// go: deleting them lets them fail at once rather than hang.
			if err := d.deps.Conntrack.FlushMark(l.Mark, d.Config.MarkMask); err != nil {
				d.Log.Error("on-demand: flush the link's flows", "link", l.Name, "err", err)
			}
			d.onDemandCommand(l, "down", l.OnDemand.Down)
		}
	}
	if next > 0 {
		if d.odTimer == nil {
			d.odTimer = d.deps.Clock.NewTimer(next)
		} else {
			d.odTimer.Reset(next)
		}
	}
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || b < a {
		return b
	}
	return a
}

// onDemandC fires when an on-demand link's keep time may have run out
// (nil: no timer).
func (d *Daemon) onDemandC() <-chan time.Time {
	if d.odTimer == nil {
		return nil
	}
	return d.odTimer.C()
}

func (d *Daemon) stopOnDemandTimer() {
	if d.odTimer != nil {
		d.odTimer.Stop()
	}
}

// neededOnDemand says whether link i is needed: in some policy (other
// than the one-link policy of a rule that names it), no link of a tier
// above its own is up.
func (d *Daemon) neededOnDemand(i int) bool {
	for _, p := range d.Config.Policies {
		if p.Implicit && p.Name != config.DefaultPolicy {
			continue
		}
		for k, tier := range p.Tiers {
			if slices.Contains(tier, i) {
				higherUp := false
				for _, above := range p.Tiers[:k] {
					for _, j := range above {
						if d.linkUp(d.Config.Links[j].Name) {
							higherUp = true
						}
					}
				}
				if !higherUp {
					return true
				}
				break
			}
		}
	}
	return false
}

// linkUp: some family of the link is up.
func (d *Daemon) linkUp(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v6 := range []bool{false, true} {
		if t := d.trackers[unitKey(name, v6)]; t != nil && t.State == health.StateUp {
			return true
		}
	}
	return false
}

func (d *Daemon) setStandby(l config.Link, on bool) {
	d.mu.Lock()
	d.standby[l.Name] = on
	d.mu.Unlock()
	v := 0.0
	if on {
		v = 1
	}
	d.standbyGauge().WithLabelValues(l.Name).Set(v)
}

// standbyGauge is flowpin_link_standby, registered with the first
// on-demand link.
func (d *Daemon) standbyGauge() *prometheus.GaugeVec {
	if d.odGauge == nil {
		d.odGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_link_standby",
			Help: "1 while an on-demand link is intentionally down (not an alarm; flowpin_link_up is 0 then).",
		}, []string{"link"})
		if err := d.metrics.registerOwned(d.odGauge); err != nil {
			panic(err) // a programming error: one per daemon
		}
	}
	return d.odGauge
}

// isStandby is read by Health; call with mu held.
func (d *Daemon) isStandby(name string) bool { return d.standby[name] }

// onDemandQueue is the hook queue of a link's on-demand commands: their
// own, so an up command never waits behind an on_change hook (one that
// hangs until its timeout would hold the backup link down that long),
// while up and down still run one at a time in the order decided.
func onDemandQueue(link string) string { return link + " on_demand" }

// onDemandCommand runs an on-demand link's up or down command through the
// shell, in the link's on-demand queue.
func (d *Daemon) onDemandCommand(l config.Link, what, cmd string) {
	if d.hooks == nil {
		return
	}
	d.hooks.Submit(hooks.Job{
		Queue: onDemandQueue(l.Name), What: "on_demand " + what,
		Argv: []string{"/bin/sh", "-c", cmd},
		Env:  []string{"FLOWPIN_LINK=" + l.Name, "FLOWPIN_INTERFACE=" + l.Interface, "FLOWPIN_STATE=" + what, "FLOWPIN_REASON=" + fmt.Sprintf("on-demand %s", what)},
	})
}
