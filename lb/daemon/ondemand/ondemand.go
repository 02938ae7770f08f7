// Package ondemand is the daemon's on-demand part: it says when an
// on-demand link is needed (no link of a tier above it up in some policy
// that has it), when its up command runs (and runs again), when its keep
// time is over and its down command runs, and which links are on
// standby. It owns that state and the keep timer; the daemon's loop calls
// it after each sync and when the timer fires, and carries out the
// actions it returns (logs, flushes, commands).
package ondemand

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"flowpin/lb/clock"
	"flowpin/lb/config"
	"flowpin/lb/daemon/hooks"
)

// Retry: an on-demand link that is needed but not up this long after its
// up command ran has the command run again.
const Retry = 30 * time.Second

// link is an on-demand link's state, owned by the loop's goroutine.
type link struct {
	// up: its up command was run (or it was up when the daemon started)
	// and its down command has not been run since.
	up bool
	// upAt: when its up command last ran.
	upAt time.Time
	// higherSince: since when a higher tier has been up in every policy
	// that has the link, while it is up; zero when none is.
	higherSince time.Time
}

// Links follows a config's on-demand links. Standby is read from other
// goroutines (the daemon's Health), hence the lock.
type Links struct {
	clock clock.Clock
	state map[string]*link
	timer clock.Timer

	mu      sync.Mutex
	standby map[string]bool
}

// New returns the on-demand part; its keep timer runs on c.
func New(c clock.Clock) *Links {
	return &Links{clock: c, state: map[string]*link{}, standby: map[string]bool{}}
}

// Kind is what an Action does.
type Kind int

// Kinds of action, each about one link.
const (
	// SetStandby: the link is on standby (intentionally down) or no
	// longer (Action.Standby).
	SetStandby Kind = iota
	// Up: it is needed; run its up command.
	Up
	// RetryUp: still needed and not up Retry after its up command: run
	// it again.
	RetryUp
	// Unneeded: a higher tier is up; its keep time starts.
	Unneeded
	// Down: a higher tier has been up for its keep time: delete its
	// flows (it is surely gone once its down command ran, so they could
	// not go on there) and run its down command.
	Down
)

// Action is one thing the daemon does for an on-demand link, in order.
type Action struct {
	Kind    Kind
	Link    config.Link
	Standby bool // with SetStandby
}

// Follow follows the active tiers after a sync (or when the keep timer
// fired): linkUp says whether some family of a link (by name) is up. An
// on-demand link is brought up when no link of a tier above it is up in
// some policy that has it, and taken down once a higher tier has been up
// in every such policy for its keep time. It arms the keep timer for the
// next time something may be due.
func (o *Links) Follow(c *config.Config, linkUp func(name string) bool) []Action {
	now := o.clock.Now()
	var next time.Duration
	var out []Action
	standby := func(l config.Link, on bool) {
		o.mu.Lock()
		o.standby[l.Name] = on
		o.mu.Unlock()
		out = append(out, Action{Kind: SetStandby, Link: l, Standby: on})
	}
	for i, l := range c.Links {
		if l.OnDemand == nil {
			continue
		}
		st := o.state[l.Name]
		if st == nil {
			// Up when the daemon started (its interface was up): it goes
			// down after keep if not needed; otherwise standby.
			st = &link{up: linkUp(l.Name)}
			o.state[l.Name] = st
			standby(l, !st.up)
		}
		needed := Needed(c, i, linkUp)
		switch {
		case needed && !st.up:
			st.up, st.upAt, st.higherSince = true, now, time.Time{}
			standby(l, false)
			out = append(out, Action{Kind: Up, Link: l})
			next = minPositive(next, Retry)
		case needed:
			st.higherSince = time.Time{}
			if linkUp(l.Name) {
				continue
			}
			// Still not up (the command failed, the modem did not
			// register): run it again every Retry.
			if left := Retry - now.Sub(st.upAt); left > 0 {
				next = minPositive(next, left)
				continue
			}
			st.upAt = now
			out = append(out, Action{Kind: RetryUp, Link: l})
			next = minPositive(next, Retry)
		case st.up && st.higherSince.IsZero():
			st.higherSince = now
			next = minPositive(next, l.OnDemand.Keep)
			out = append(out, Action{Kind: Unneeded, Link: l})
		case st.up:
			if left := l.OnDemand.Keep - now.Sub(st.higherSince); left > 0 {
				next = minPositive(next, left)
				continue
			}
			st.up, st.higherSince = false, time.Time{}
			standby(l, true)
			out = append(out, Action{Kind: Down, Link: l})
		}
	}
	if next > 0 {
		if o.timer == nil {
			o.timer = o.clock.NewTimer(next)
		} else {
			o.timer.Reset(next)
		}
	}
	return out
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || b < a {
		return b
	}
	return a
}

// C fires when an on-demand link's keep time (or retry) may have run out
// (nil: no timer).
func (o *Links) C() <-chan time.Time {
	if o.timer == nil {
		return nil
	}
	return o.timer.C()
}

// Stop stops the keep timer.
func (o *Links) Stop() {
	if o.timer != nil {
		o.timer.Stop()
	}
}

// Standby says whether the link is intentionally down.
func (o *Links) Standby(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.standby[name]
}

// Needed says whether link i is needed: in some policy (other than the
// one-link policy of a rule that names it), no link of a tier above its
// own is up.
func Needed(c *config.Config, i int, linkUp func(name string) bool) bool {
	for _, p := range c.Policies {
		if p.Implicit && p.Name != config.DefaultPolicy {
			continue
		}
		for k, tier := range p.Tiers {
			if slices.Contains(tier, i) {
				higherUp := false
				for _, above := range p.Tiers[:k] {
					for _, j := range above {
						if linkUp(c.Links[j].Name) {
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

// Queue is the hook queue of a link's on-demand commands: their own, so
// an up command never waits behind an on_change hook (one that hangs
// until its timeout would hold the backup link down that long), while up
// and down still run one at a time in the order decided.
func Queue(link string) string { return link + " on_demand" }

// Command is an on-demand link's up or down command (what), run through
// the shell in the link's on-demand queue.
func Command(l config.Link, what, cmd string) hooks.Job {
	return hooks.Job{
		Queue: Queue(l.Name), What: "on_demand " + what,
		Argv: []string{"/bin/sh", "-c", cmd},
		Env:  []string{"FLOWPIN_LINK=" + l.Name, "FLOWPIN_INTERFACE=" + l.Interface, "FLOWPIN_STATE=" + what, "FLOWPIN_REASON=" + fmt.Sprintf("on-demand %s", what)},
	}
}
