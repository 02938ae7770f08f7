package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"flowpin/lb/daemon/passive"
	"flowpin/lb/health"
	"flowpin/nft/ct"
)

// passiveWatch feeds the detector from the flow tracker's goroutine and
// hands suspicions to the daemon.
type passiveWatch struct {
	det     *passive.Detector
	suspect func(passive.Suspicion)
}

func (w *passiveWatch) Events(evs []ct.Event, now time.Time) {
	for _, s := range w.det.Observe(evs, now) {
		w.suspect(s)
	}
}

func (w *passiveWatch) Tick(now time.Time) {
	for _, s := range w.det.Tick(now) {
		w.suspect(s)
	}
}

// Burst probes: each target probed burstProbes times at once, waiting
// 4 times the link's last round-trip time, within [burstMinTimeout, the
// link's probe timeout].
const (
	burstProbes     = 3
	burstMinTimeout = 200 * time.Millisecond
)

// suspect asks an up unit's probe loop for a burst at once.
func (d *Daemon) suspect(s passive.Suspicion) {
	u := d.units[s.Link]
	l := d.Config.Links[u.link]
	if !d.board.Suspect(unitKey(l.Name, u.v6), s.Why) {
		return
	}
	d.metrics.suspected(l.Name, u.family())
	d.Log.Warn("link suspect: its new flows go unanswered; probing it at once", "link", l.Name, "family", u.family(), "why", s.Why)
}

// burstRound probes the unit's targets burstProbes times each, at once,
// with a short timeout.
func (lp *probeLoop) burstRound(p *Prober) health.Round {
	d := lp.owner.Load()
	tg := d.targets(lp.link, lp.v6)
	if err := lp.open(p); err != nil {
		return health.Round{Sent: max(len(tg), 1), Err: err}
	}
	if len(tg) == 0 {
		return health.Round{Sent: 1, Err: errors.New("no target: no gateway known yet")}
	}
	h, _ := d.board.View(lp.key)
	rtt := h.RTT.Truncate(time.Microsecond) // as status shows it
	timeout := max(min(4*rtt, lp.link.Check.Timeout), min(burstMinTimeout, lp.link.Check.Timeout))
	var many []netip.Addr
	for range burstProbes {
		many = append(many, tg...)
	}
	return lp.probe(p, many, timeout)
}

// burstDone acts on a burst: no answer at all takes the unit down (its
// probes bring it back as usual); any answer clears it.
func (d *Daemon) burstDone(r probeResult) {
	u := d.units[r.unit]
	l := d.Config.Links[u.link]
	why := d.board.BurstWhy(unitKey(l.Name, u.v6))
	if r.round.Answered == 0 {
		d.metrics.burst(l.Name, u.family(), "down")
		lost := "probes lost"
		if r.round.Err != nil {
			lost = "probes failed: " + r.round.Err.Error() + ";"
		} else if len(r.round.Lost) > 0 {
			var to []string
			for _, a := range r.round.Lost {
				if s := a.String(); !slices.Contains(to, s) {
					to = append(to, s)
				}
			}
			lost += " to " + strings.Join(to, ", ")
		}
		d.forceDown(l, fmt.Sprintf("%d/%d burst %s after %s", r.round.Sent, r.round.Sent, lost, why), &u.v6)
		return
	}
	d.metrics.burst(l.Name, u.family(), "cleared")
	d.Log.Info("suspect link answers its probes; it stays up", "link", l.Name, "family", u.family(), "answered", r.round.Answered, "of", r.round.Sent)
}
