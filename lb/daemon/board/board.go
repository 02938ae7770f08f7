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
	// overrides set a unit's state whatever its tracker says: an
	// operator's down or up, an exhausted quota's standby. The tracker
	// goes on judging the probes underneath, for when it is lifted.
	overrides map[string]Override
}

// Override is a unit's state set from outside its health checks.
type Override struct {
	State  health.LinkState // up, down or standby
	Reason string
	Since  time.Time
}

// New returns a board with no unit.
func New() *Board {
	return &Board{trackers: map[string]*health.Tracker{}, gateways: map[string]netip.Addr{}, why: map[string]string{}, overrides: map[string]Override{}}
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
	state, reason := t.State, t.Reason
	if o, ok := b.overrides[key]; ok {
		changed, state, reason = false, o.State, o.Reason
	}
	return Seen{Changed: changed, State: state, Reason: reason, Bad: bad, RTT: t.RTT(), Jitter: t.Jitter(), Loss: t.Loss()}
}

// ForceDown takes unit key down at once; changed says whether it was not
// down already, reason is why it is down now.
func (b *Board) ForceDown(key, why string, now time.Time) (changed bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.trackers[key]
	changed = t.ForceDown(why, now)
	if o, ok := b.overrides[key]; ok {
		return false, o.Reason
	}
	return changed, t.Reason
}

// Up: unit key is up.
func (b *Board) Up(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	state, _, ok := b.state(key)
	return ok && state == health.StateUp
}

// state is unit key's state as the daemon acts on it: its override's, or
// its tracker's.
func (b *Board) state(key string) (health.LinkState, string, bool) {
	if o, ok := b.overrides[key]; ok {
		return o.State, o.Reason, true
	}
	if t := b.trackers[key]; t != nil {
		return t.State, t.Reason, true
	}
	return "", "", false
}

// SetOverride sets unit key's override (nil: lifts it) and says whether
// its state changed, and what it is now.
func (b *Board) SetOverride(key string, o *Override) (changed bool, state health.LinkState, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before, _, _ := b.state(key)
	if o == nil {
		delete(b.overrides, key)
	} else {
		b.overrides[key] = *o
	}
	state, reason, _ = b.state(key)
	return state != before, state, reason
}

func (b *Board) overridden(key string) bool {
	_, ok := b.overrides[key]
	return ok
}

// Overridden is unit key's override, if it has one.
func (b *Board) Overridden(key string) (Override, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.overrides[key]
	return o, ok
}

// Down says why unit key is down (or on standby: out all the same), if
// it is.
func (b *Board) Down(key string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if state, reason, ok := b.state(key); ok && (state == health.StateDown || state == health.StateStandby) {
		return reason, true
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
	v := View{State: t.State, LastChange: t.LastChange, Reason: t.Reason, RTT: t.RTT(), Jitter: t.Jitter(), Loss: t.Loss(), Rounds: t.Rounds()}
	if o, ok := b.overrides[key]; ok {
		v.State, v.Reason, v.LastChange = o.State, o.Reason, o.Since
	}
	return v, true
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
	// A unit taken out by an override answers its probes as it likes:
	// it is not coming back by itself.
	if t := b.trackers[self]; t != nil && !b.overridden(self) {
		if good, _ := t.Streaks(); good > 0 {
			return ready
		}
	}
	for i, k := range others {
		t := b.trackers[k]
		if o, ok := b.overrides[k]; ok {
			// In or out by the operator (or its quota): up since then.
			ready[i] = o.State == health.StateUp && o.Since.Before(failed)
			continue
		}
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
	if _, set := b.overrides[key]; set || t == nil || t.State != health.StateUp || burst == nil {
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
