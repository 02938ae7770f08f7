package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/health"
	"flowpin/nft/ct"
)

// PassiveParams tune the passive failure detector: each link's own new
// flows (TCP and UDP) that see no reply. The traffic only makes a link
// suspect; a burst of probes then decides.
type PassiveParams struct {
	// Window: a new flow without a reply this long is unanswered. A link
	// whose replies are slow waits longer: 4 times its mean reply delay,
	// up to MaxWindow.
	Window, MaxWindow time.Duration
	// Last is how many of a link's most recent judged flows make its
	// recent share, counting only flows judged within Span.
	Last int
	Span time.Duration
	// MinFlows: a recent share of fewer flows means nothing.
	MinFlows int
	// Jump: the recent share must exceed the link's baseline (its share
	// over its earlier flows) by this much...
	Jump float64
	// Margin: ...and that of every other link with recent flows by this
	// much: a far server that died for every link is no link's fault.
	Margin float64
	// Alpha is the weight of one flow in the baseline (an average over
	// about 1/Alpha flows).
	Alpha float64
	// Cooldown: a link is suspected at most this often.
	Cooldown time.Duration
	// MaxPending bounds the flows waiting for a reply (a flood of new
	// flows is not followed beyond it).
	MaxPending int
}

// DefaultPassive are the defaults: three of a link's last four new flows
// unanswered for 400 ms, when it usually answers and other links do,
// make it suspect.
var DefaultPassive = PassiveParams{
	Window: 400 * time.Millisecond, MaxWindow: 3 * time.Second,
	Last: 4, Span: 2 * time.Second, MinFlows: 3,
	Jump: 0.5, Margin: 0.3, Alpha: 0.02,
	Cooldown: 2 * time.Second, MaxPending: 200_000,
}

// pendingFlow is a flow waiting for its reply. Kept small: a burst of
// new flows (a scan, a reconnect storm) holds one per flow.
type pendingFlow struct {
	at   int64 // Unix nanoseconds
	link int32
	dst  netip.Addr
}

// queued is a pending flow in the order flows began.
type queued struct {
	id uint32
	at int64
}

type outcome struct {
	at         time.Time
	unanswered bool
}

type linkWatch struct {
	recent   []outcome // the last p.Last, oldest first
	baseline float64
	judged   int
	delay    time.Duration // mean reply delay (EWMA)
	suspect  time.Time     // last suspicion
}

// suspicion is a link the traffic says may be dead.
type suspicion struct {
	link int
	why  string
}

// passiveDetector watches new flows per link for replies. It is pure:
// time comes with each call. Not safe for concurrent use.
type passiveDetector struct {
	p      PassiveParams
	mask   uint32
	bySlot map[watchSlot]int
	links  []linkWatch // by slot
	v6     []bool      // by slot
	// Flows waiting for a reply, by ID, and in the order they began.
	pending map[uint32]pendingFlow
	queue   []queued
	// silent[dst][i]: when a flow to dst over link i last went
	// unanswered. A destination silent over two links is the far end's
	// fault, not a link's: its flows are not held against any link.
	silent    map[netip.Addr][]time.Time
	lastSweep time.Time
}

// watchSlot is what the detector judges: one family of one link.
type watchSlot struct {
	mark uint32
	v6   bool
}

// sameSlots: o judges the same links with the same parameters.
func (d *passiveDetector) sameSlots(o *passiveDetector) bool {
	return d.p == o.p && d.mask == o.mask && maps.Equal(d.bySlot, o.bySlot)
}

func newPassiveDetector(p PassiveParams, mask uint32, slots []watchSlot) *passiveDetector {
	d := &passiveDetector{p: p, mask: mask, bySlot: map[watchSlot]int{}, links: make([]linkWatch, len(slots)), v6: make([]bool, len(slots)), pending: map[uint32]pendingFlow{}, silent: map[netip.Addr][]time.Time{}}
	for i, s := range slots {
		d.bySlot[s] = i
		d.v6[i] = s.v6
	}
	return d
}

// observe takes a batch of conntrack events seen at now, and returns
// the links that became suspect.
func (d *passiveDetector) observe(evs []ct.Event, now time.Time) []suspicion {
	var out []suspicion
	for i := range evs {
		ev := &evs[i]
		switch ev.Type {
		case ct.EventNew:
			link, ok := d.bySlot[watchSlot{mark: ev.Mark & d.mask, v6: ev.Family == unix.AF_INET6}]
			if !ok || (ev.Proto != 6 && ev.Proto != 17) || ev.SeenReply || len(d.pending) >= d.p.MaxPending {
				continue
			}
			at := now.UnixNano()
			d.pending[ev.ID] = pendingFlow{at: at, link: int32(link), dst: ev.Dst}
			d.queue = append(d.queue, queued{id: ev.ID, at: at})
		case ct.EventUpdate:
			if !ev.SeenReply {
				continue
			}
			if pf, ok := d.pending[ev.ID]; ok {
				delete(d.pending, ev.ID)
				lw := &d.links[pf.link]
				delay := time.Duration(now.UnixNano() - pf.at)
				if lw.delay == 0 {
					lw.delay = delay
				} else {
					lw.delay = (7*lw.delay + delay) / 8
				}
				if s, ok := d.judge(int(pf.link), false, now); ok {
					out = append(out, s)
				}
			}
		case ct.EventDestroy:
			delete(d.pending, ev.ID) // gone before its window: not judged
		}
	}
	return append(out, d.tick(now)...)
}

// window is how long link i's flows may wait for a reply.
func (d *passiveDetector) window(i int) time.Duration {
	return min(max(d.p.Window, 4*d.links[i].delay), d.p.MaxWindow)
}

// tick judges the flows whose window ended by now as unanswered.
func (d *passiveDetector) tick(now time.Time) []suspicion {
	var out []suspicion
	n := 0
	for _, q := range d.queue {
		pf, ok := d.pending[q.id]
		if !ok || pf.at != q.at {
			n++ // answered or gone; or an ID reused since
			continue
		}
		if time.Duration(now.UnixNano()-pf.at) < d.window(int(pf.link)) {
			// Flows began in order; a later one's window (same link or
			// one with a longer window) is not over either, except on a
			// link with a shorter window: those wait a little longer.
			break
		}
		n++
		delete(d.pending, q.id)
		if d.silentElsewhere(pf, now) {
			continue
		}
		if s, ok := d.judge(int(pf.link), true, now); ok {
			out = append(out, s)
		}
	}
	d.queue = d.queue[n:]
	if now.Sub(d.lastSweep) > d.p.Span {
		d.lastSweep = now
		for dst, at := range d.silent {
			if !slices.ContainsFunc(at, func(t time.Time) bool { return now.Sub(t) <= d.p.Span }) {
				delete(d.silent, dst)
			}
		}
	}
	if len(d.queue) == 0 {
		d.queue = nil // let the array go
	}
	return out
}

// silentElsewhere records that pf's destination did not answer over its
// link, and says whether it did not answer over another link either,
// lately.
func (d *passiveDetector) silentElsewhere(pf pendingFlow, now time.Time) bool {
	if !pf.dst.IsValid() {
		return false
	}
	at, ok := d.silent[pf.dst]
	if !ok {
		if len(d.silent) >= d.p.MaxPending {
			return false
		}
		at = make([]time.Time, len(d.links))
		d.silent[pf.dst] = at
	}
	at[pf.link] = now
	for j, t := range at {
		if j != int(pf.link) && !t.IsZero() && now.Sub(t) <= d.p.Span {
			return true
		}
	}
	return false
}

// share is link i's unanswered share over its recent flows, and how many
// there are.
func (d *passiveDetector) share(i int, now time.Time) (float64, int) {
	u, n := 0, 0
	for _, o := range d.links[i].recent {
		if now.Sub(o.at) > d.p.Span {
			continue
		}
		n++
		if o.unanswered {
			u++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(u) / float64(n), n
}

// judge records one flow's outcome and says whether its link is now
// suspect.
func (d *passiveDetector) judge(i int, unanswered bool, now time.Time) (suspicion, bool) {
	lw := &d.links[i]
	lw.recent = append(lw.recent, outcome{at: now, unanswered: unanswered})
	if len(lw.recent) > d.p.Last {
		lw.recent = lw.recent[len(lw.recent)-d.p.Last:]
	}
	base := lw.baseline
	// The baseline learns after the check, so the flows that raise the
	// share do not raise the bar in the same breath.
	defer func() {
		v := 0.0
		if unanswered {
			v = 1
		}
		lw.baseline += d.p.Alpha * (v - lw.baseline)
		lw.judged++
	}()
	if !unanswered || (!lw.suspect.IsZero() && now.Sub(lw.suspect) < d.p.Cooldown) {
		return suspicion{}, false
	}
	share, n := d.share(i, now)
	if n < d.p.MinFlows || share < base+d.p.Jump {
		return suspicion{}, false
	}
	others := -1.0
	for j := range d.links {
		if j == i || d.v6[j] != d.v6[i] {
			continue // IPv4 and IPv6 fail apart: compare like with like
		}
		if s, m := d.share(j, now); m >= 2 {
			others = max(others, s)
			if share < s+d.p.Margin {
				return suspicion{}, false
			}
		}
	}
	lw.suspect = now
	why := fmt.Sprintf("%d of its last %d new flows went unanswered for %v (baseline %.0f%%", int(share*float64(n)+0.5), n, d.window(i), 100*base)
	if others >= 0 {
		why += fmt.Sprintf(", other links at most %.0f%%", 100*others)
	}
	return suspicion{link: i, why: why + ")"}, true
}

// passiveWatch feeds the detector from the flow tracker's goroutine and
// hands suspicions to the daemon.
type passiveWatch struct {
	d   *Daemon
	det *passiveDetector
}

func (w *passiveWatch) events(evs []ct.Event, now time.Time) {
	for _, s := range w.det.observe(evs, now) {
		w.d.suspect(s)
	}
}

func (w *passiveWatch) tick(now time.Time) {
	for _, s := range w.det.tick(now) {
		w.d.suspect(s)
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
func (d *Daemon) suspect(s suspicion) {
	u := d.units[s.link]
	l := d.Config.Links[u.link]
	d.mu.Lock()
	t := d.trackers[unitKey(l.Name, u.v6)]
	up := t != nil && t.State == health.StateUp && d.loops != nil
	if up {
		d.suspectWhy[s.link] = s.why
	}
	var burst chan struct{}
	if up {
		burst = d.loops[s.link].burst
	}
	d.mu.Unlock()
	if !up {
		return
	}
	d.metrics.suspected(l.Name, u.family())
	d.Log.Warn("link suspect: its new flows go unanswered; probing it at once", "link", l.Name, "family", u.family(), "why", s.why)
	select {
	case burst <- struct{}{}:
	default: // one is pending already
	}
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
	var rtt time.Duration
	for _, h := range d.Health() {
		if h.Name == lp.link.Name && h.Family == (unit{v6: lp.v6}).family() {
			rtt = time.Duration(h.RTTMillis * float64(time.Millisecond))
		}
	}
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
	d.mu.Lock()
	why := d.suspectWhy[r.unit]
	d.mu.Unlock()
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
