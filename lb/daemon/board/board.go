// Package board is the links' health as the daemon judges it: per unit
// (one address family of one link, named by its unit key) the health
// tracker, the gateway the unit last planned with, and the burst of
// probes a suspicion asked of it. The daemon's loop writes it; the probe
// loops (their targets), the flow watcher (suspicions), status and the
// API read it from their own goroutines, hence its lock.
package board

import (
	"maps"
	"net/netip"
	"sync"
	"time"

	"flowpin/lb/health"
)

// Board holds the units' health.
type Board struct {
	mu       sync.Mutex
	trackers map[string]*health.Tracker
	gateways map[string]netip.Addr
	// bursts are the probe loops' burst requests, once armed; why, the
	// suspicion that asked for the burst under way.
	bursts map[string]chan<- struct{}
	why    map[string]string
}

// New returns a board with no unit.
func New() *Board {
	return &Board{trackers: map[string]*health.Tracker{}, gateways: map[string]netip.Addr{}, why: map[string]string{}}
}

// Add sets unit key's tracker: a new one, or the one it had before a
// reload.
func (b *Board) Add(key string, t *health.Tracker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trackers[key] = t
}

// Seen is a unit's health after a probe round.
type Seen struct {
	Changed bool // its state changed
	State   health.LinkState
	Reason  string
	Bad     int // rounds failed in a row
	RTT     time.Duration
	Jitter  time.Duration
	Loss    float64
}

// Observe judges unit key's probe round; the unit must have a tracker.
func (b *Board) Observe(key string, r health.Round, quorum int, at time.Time) Seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.trackers[key]
	changed := t.Observe(r, quorum, at)
	_, bad := t.Streaks()
	return Seen{Changed: changed, State: t.State, Reason: t.Reason, Bad: bad, RTT: t.RTT(), Jitter: t.Jitter(), Loss: t.Loss()}
}

// ForceDown takes unit key down at once; changed says whether it was not
// down already, reason is why it is down now.
func (b *Board) ForceDown(key, why string, now time.Time) (changed bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.trackers[key]
	changed = t.ForceDown(why, now)
	return changed, t.Reason
}

// Up: unit key is up.
func (b *Board) Up(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.trackers[key]
	return t != nil && t.State == health.StateUp
}

// Down says why unit key is down, if it is.
func (b *Board) Down(key string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.trackers[key]; t != nil && t.State == health.StateDown {
		return t.Reason, true
	}
	return "", false
}

// View is a unit's health as status shows it.
type View struct {
	State      health.LinkState
	LastChange time.Time
	Reason     string
	RTT        time.Duration
	Jitter     time.Duration
	Loss       float64
	Rounds     int // in the window so far
}

// View is unit key's health; false when it has no tracker.
func (b *Board) View(key string) (View, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.trackers[key]
	if t == nil {
		return View{}, false
	}
	return View{State: t.State, LastChange: t.LastChange, Reason: t.Reason, RTT: t.RTT(), Jitter: t.Jitter(), Loss: t.Loss(), Rounds: t.Rounds()}, true
}

// Ready judges units as takers of the flows of unit self, which failed a
// round begun at failed: ready[i] when others[i] is up, answering, and up
// since before failed (so a unit that came back with self's own recovery
// under way, as after the probe target's outage, does not count yet).
// None is ready while self answers again: it is coming back, its flows
// may be fine.
func (b *Board) Ready(self string, others []string, failed time.Time) []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	ready := make([]bool, len(others))
	if t := b.trackers[self]; t != nil {
		if good, _ := t.Streaks(); good > 0 {
			return ready
		}
	}
	for i, k := range others {
		t := b.trackers[k]
		if t == nil || t.State != health.StateUp {
			continue
		}
		_, bad := t.Streaks()
		ready[i] = bad == 0 && t.LastChange.Before(failed)
	}
	return ready
}

// Gateway is the gateway unit key last planned with (invalid: none).
func (b *Board) Gateway(key string) netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gateways[key]
}

// SetGateway records the gateway unit key planned with, and returns the
// one before.
func (b *Board) SetGateway(key string, gw netip.Addr) netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.gateways[key]
	b.gateways[key] = gw
	return old
}

// Arm gives the board the units' probe loops' burst requests: before,
// a suspicion finds no loop to ask.
func (b *Board) Arm(bursts map[string]chan<- struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bursts = bursts
}

// Armed: Arm was called.
func (b *Board) Armed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bursts != nil
}

// Suspect asks unit key's probe loop for a burst at once, if the unit is
// up and the board armed, and keeps why for BurstWhy. A burst already
// pending is not asked again. It says whether the unit was up to suspect.
func (b *Board) Suspect(key, why string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.trackers[key]
	burst := b.bursts[key]
	if t == nil || t.State != health.StateUp || burst == nil {
		return false
	}
	b.why[key] = why
	select {
	case burst <- struct{}{}:
	default: // one is pending already
	}
	return true
}

// BurstWhy is the suspicion that last asked unit key for a burst.
func (b *Board) BurstWhy(key string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.why[key]
}

// Trackers are the units' trackers, for the daemon of a reloaded config.
func (b *Board) Trackers() map[string]*health.Tracker {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.trackers)
}
