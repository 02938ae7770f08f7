// Package passive is the daemon's passive failure detection: it watches
// each link's own new flows for replies and names the links whose flows
// go unanswered well above their baseline and other links'. It is pure
// (time comes with each call) and knows nothing of the daemon, which
// feeds it conntrack events and acts on its suspicions (a burst of
// probes).
package passive

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/nft/ct"
)

// Params tune the passive failure detector: each link's own new
// flows (TCP and UDP) that see no reply. The traffic only makes a link
// suspect; a burst of probes then decides.
type Params struct {
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

// Default are the defaults: three of a link's last four new flows
// unanswered for 400 ms, when it usually answers and other links do,
// make it suspect.
var Default = Params{
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

// TickEvery is how often the detector wants a Tick (the flow tracker
// ticks it): a flow's window is judged to about this.
const TickEvery = 50 * time.Millisecond

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

// Suspicion is a link (a slot) the traffic says may be dead.
type Suspicion struct {
	Link int // the slot
	Why  string
}

// Detector watches new flows per link for replies. It is pure:
// time comes with each call. Not safe for concurrent use.
type Detector struct {
	p      Params
	mask   uint32
	bySlot map[Slot]int
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

// Slot is what the detector judges: one family of one link.
type Slot struct {
	Mark uint32
	V6   bool
}

// SameSlots: o judges the same links with the same parameters.
func (d *Detector) SameSlots(o *Detector) bool {
	return d.p == o.p && d.mask == o.mask && maps.Equal(d.bySlot, o.bySlot)
}

// NewDetector judges slots (a link's family each) with p; a flow's
// mark under mask names its link.
func NewDetector(p Params, mask uint32, slots []Slot) *Detector {
	d := &Detector{p: p, mask: mask, bySlot: map[Slot]int{}, links: make([]linkWatch, len(slots)), v6: make([]bool, len(slots)), pending: map[uint32]pendingFlow{}, silent: map[netip.Addr][]time.Time{}}
	for i, s := range slots {
		d.bySlot[s] = i
		d.v6[i] = s.V6
	}
	return d
}

// Observe takes a batch of conntrack events seen at now, and returns
// the links that became suspect.
func (d *Detector) Observe(evs []ct.Event, now time.Time) []Suspicion {
	var out []Suspicion
	for i := range evs {
		ev := &evs[i]
		switch ev.Type {
		case ct.EventNew:
			link, ok := d.bySlot[Slot{Mark: ev.Mark & d.mask, V6: ev.Family == unix.AF_INET6}]
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
	return append(out, d.Tick(now)...)
}

// window is how long link i's flows may wait for a reply.
func (d *Detector) window(i int) time.Duration {
	return min(max(d.p.Window, 4*d.links[i].delay), d.p.MaxWindow)
}

// Tick judges the flows whose window ended by now as unanswered.
func (d *Detector) Tick(now time.Time) []Suspicion {
	var out []Suspicion
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
func (d *Detector) silentElsewhere(pf pendingFlow, now time.Time) bool {
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
func (d *Detector) share(i int, now time.Time) (float64, int) {
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
func (d *Detector) judge(i int, unanswered bool, now time.Time) (Suspicion, bool) {
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
		return Suspicion{}, false
	}
	share, n := d.share(i, now)
	if n < d.p.MinFlows || share < base+d.p.Jump {
		return Suspicion{}, false
	}
	others := -1.0
	for j := range d.links {
		if j == i || d.v6[j] != d.v6[i] {
			continue // IPv4 and IPv6 fail apart: compare like with like
		}
		if s, m := d.share(j, now); m >= 2 {
			others = max(others, s)
			if share < s+d.p.Margin {
				return Suspicion{}, false
			}
		}
	}
	lw.suspect = now
	why := fmt.Sprintf("%d of its last %d new flows went unanswered for %v (baseline %.0f%%", int(share*float64(n)+0.5), n, d.window(i), 100*base)
	if others >= 0 {
		why += fmt.Sprintf(", other links at most %.0f%%", 100*others)
	}
	return Suspicion{Link: i, Why: why + ")"}, true
}
