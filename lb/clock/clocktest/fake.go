// Package clocktest is a clock.Clock that moves only when told.
package clocktest

import (
	"runtime"
	"strings"
	"sync"
	"time"

	"flowpin/lb/clock"
)

var _ clock.Clock = (*Fake)(nil)

// Fake moves only when a test calls Advance or, with AutoAdvance set,
// when a timer is armed: the clock then jumps to the timer's time and
// fires it, so code that waits runs through its waits at once, in order.
type Fake struct {
	// AutoAdvance: arming a timer moves the clock to its time.
	AutoAdvance bool

	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// New is a fake clock at 2026-01-01 00:00 UTC.
func New() *Fake {
	return &Fake{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// NewAuto is New with AutoAdvance.
func NewAuto() *Fake {
	c := New()
	c.AutoAdvance = true
	return c
}

func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Fake) NewTimer(d time.Duration) clock.Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), by: caller()}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

// Advance moves the clock and fires every timer that is due.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(d)
}

// advance needs c.mu held.
func (c *Fake) advance(d time.Duration) {
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		t.fireIfDue()
	}
}

// Armed counts the timers waiting to fire.
func (c *Fake) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.armed {
			n++
		}
	}
	return n
}

// ArmedBy counts the timers waiting to fire that were made in a function
// whose name ends in fn, e.g. "(*probeLoop).run". A test that must move
// the clock only once certain timers are armed waits for those: a count
// of all of them is reached early when others come and go.
func (c *Fake) ArmedBy(fn string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.armed && strings.HasSuffix(t.by, fn) {
			n++
		}
	}
	return n
}

// caller is the function that called NewTimer.
func caller() string {
	pc := make([]uintptr, 1)
	if runtime.Callers(3, pc) == 0 {
		return ""
	}
	f, _ := runtime.CallersFrames(pc).Next()
	return f.Function
}

type fakeTimer struct {
	c     *Fake
	ch    chan time.Time
	at    time.Time
	armed bool
	by    string // the function that made it
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

// fireIfDue needs c.mu held.
func (t *fakeTimer) fireIfDue() {
	if t.armed && !t.at.After(t.c.now) {
		t.armed = false
		select {
		case t.ch <- t.c.now:
		default:
		}
	}
}

func (t *fakeTimer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	select {
	case <-t.ch:
	default:
	}
	t.at, t.armed = t.c.now.Add(d), true
	if t.c.AutoAdvance && t.at.After(t.c.now) {
		t.c.advance(t.at.Sub(t.c.now))
		return
	}
	t.fireIfDue()
}

func (t *fakeTimer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.armed = false
	select {
	case <-t.ch:
	default:
	}
}
