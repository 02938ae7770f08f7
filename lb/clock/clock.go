// Package clock is flowpin's time as a dependency: the daemon's loop and
// verify's waits read it through Clock, so that their tests drive time by
// hand (clocktest.Fake) instead of sleeping.
package clock

import "time"

// Clock is time: Real in production, a fake in tests.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer that can be re-armed.
type Timer interface {
	C() <-chan time.Time
	// Reset re-arms the timer; a value of the earlier arming that was not
	// received is dropped (Go 1.23 timer semantics).
	Reset(d time.Duration)
	Stop()
}

// Real is the wall clock.
type Real struct{}

func (Real) Now() time.Time { return time.Now() }

func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time   { return t.t.C }
func (t realTimer) Reset(d time.Duration) { t.t.Reset(d) }
func (t realTimer) Stop()                 { t.t.Stop() }

// Sleep waits d on c.
func Sleep(c Clock, d time.Duration) {
	t := c.NewTimer(d)
	defer t.Stop()
	<-t.C()
}
