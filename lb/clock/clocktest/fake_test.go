package clocktest

import (
	"testing"
	"time"

	"flowpin/lb/clock"
)

func fired(t clock.Timer) bool {
	select {
	case <-t.C():
		return true
	default:
		return false
	}
}

func TestFake(t *testing.T) {
	c := New()
	start := c.Now()
	a, b := c.NewTimer(time.Second), c.NewTimer(2*time.Second)
	if c.Armed() != 2 || fired(a) || fired(b) {
		t.Fatal("timers fired before their time")
	}
	c.Advance(time.Second)
	if !fired(a) || fired(b) || c.Armed() != 1 {
		t.Fatal("Advance(1s): want the 1s timer fired, the 2s one armed")
	}
	c.Advance(time.Second)
	if !fired(b) || c.Armed() != 0 {
		t.Fatal("Advance(2s): want the 2s timer fired")
	}
	// Reset drops a value not received; Stop disarms.
	a.Reset(time.Second)
	c.Advance(time.Second)
	a.Reset(time.Second)
	if fired(a) {
		t.Error("Reset kept the earlier arming's value")
	}
	a.Stop()
	c.Advance(time.Hour)
	if fired(a) || c.Armed() != 0 {
		t.Error("a stopped timer fired")
	}
	if got := c.Now().Sub(start); got != time.Hour+3*time.Second {
		t.Errorf("clock moved %v", got)
	}
	// A zero timer is due at once.
	if z := c.NewTimer(0); !fired(z) {
		t.Error("zero timer did not fire")
	}
}

func TestFakeAutoAdvance(t *testing.T) {
	c := NewAuto()
	start := c.Now()
	other := c.NewTimer(time.Second)
	for range 3 {
		clock.Sleep(c, 400*time.Millisecond)
	}
	if got := c.Now().Sub(start); got != time.Second+1200*time.Millisecond {
		// The first arming jumps to 1s; each sleep then adds 400ms.
		t.Errorf("clock moved %v, want 2.2s", got)
	}
	if !fired(other) {
		t.Error("a timer the clock moved past did not fire")
	}
}

func newTimerHere(c *Fake, d time.Duration) clock.Timer { return c.NewTimer(d) }

// ArmedBy counts the armed timers of the function that made them.
func TestArmedBy(t *testing.T) {
	c := New()
	a := newTimerHere(c, time.Second)
	c.NewTimer(time.Minute)
	if got := c.ArmedBy(".newTimerHere"); got != 1 {
		t.Errorf("ArmedBy(newTimerHere) = %d, want 1", got)
	}
	if got := c.ArmedBy(".TestArmedBy"); got != 1 {
		t.Errorf("ArmedBy(TestArmedBy) = %d, want 1", got)
	}
	c.Advance(time.Second)
	if got := c.ArmedBy(".newTimerHere"); got != 0 || !fired(a) {
		t.Errorf("after it fired: ArmedBy = %d, fired %v", got, fired(a))
	}
}
