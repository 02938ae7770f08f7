package daemon

import (
	"errors"
	"testing"
	"time"
)

// fired says whether the runner's timer fired, and takes the value.
func fired(r *syncRunner) bool {
	select {
	case <-r.C():
		return true
	default:
		return false
	}
}

func TestRunnerSchedule(t *testing.T) {
	c := newFakeClock()
	r := newSyncRunner(c, 100*time.Millisecond, 30*time.Second)
	step := func(d time.Duration, want bool, what string) {
		t.Helper()
		c.Advance(d)
		if got := fired(r); got != want {
			t.Fatalf("%s: fired %v, want %v", what, got, want)
		}
	}

	// The first request in a quiet time runs at once.
	r.Request("route change")
	step(0, true, "first request")
	if why := r.Due(); why != "route change" {
		t.Errorf("why %q", why)
	}
	r.Done(nil)

	// A burst right after a sync waits out the minimum interval and is
	// one sync; it names each kind of change once, the first few.
	for range 100 {
		r.Request("address change")
		r.Request("route change")
	}
	step(99*time.Millisecond, false, "burst before min interval")
	step(time.Millisecond, true, "burst at min interval")
	if why := r.Due(); why != "address change; route change" {
		t.Errorf("why %q", why)
	}
	r.Done(nil)
	for _, why := range []string{"a", "b", "a", "c", "d", "e"} {
		r.Request(why)
	}
	step(100*time.Millisecond, true, "five kinds")
	if why := r.Due(); why != "a; b; c; ..." {
		t.Errorf("why %q", why)
	}
	r.Done(nil)
	step(10*time.Second, false, "nothing asked")

	// Failures back off 1s, 2s, 4s, ... up to the backstop; requests do
	// not cut the backoff short.
	r.Request("x")
	step(0, true, "request")
	r.Due()
	r.Done(errors.New("boom"))
	r.Request("y")
	step(999*time.Millisecond, false, "within 1s backoff")
	step(time.Millisecond, true, "after 1s backoff")
	if why := r.Due(); why != "y" {
		t.Errorf("why %q", why)
	}
	r.Done(errors.New("boom"))
	step(1999*time.Millisecond, false, "within 2s backoff")
	step(time.Millisecond, true, "after 2s backoff")
	if why := r.Due(); why != "retry" {
		t.Errorf("why %q", why)
	}
	r.Done(errors.New("boom"))
	if r.Backoff() != 4*time.Second {
		t.Errorf("backoff %v", r.Backoff())
	}
	// Lost notifications: at once, backoff or not.
	r.RequestNow("notifications lost")
	step(0, true, "request now")
	r.Due()
	r.Done(nil)
	if r.Backoff() != 0 {
		t.Errorf("backoff after success %v", r.Backoff())
	}
	for range 10 {
		r.Due()
		r.Done(errors.New("boom"))
	}
	if r.Backoff() != 30*time.Second {
		t.Errorf("backoff capped at %v", r.Backoff())
	}
	r.Due()
	r.Done(nil)

	// Nothing at all: the backstop.
	step(30*time.Second-time.Millisecond, false, "before backstop")
	step(time.Millisecond, true, "backstop")
	if why := r.Due(); why != "resync" {
		t.Errorf("why %q", why)
	}
	r.Done(nil)
	r.Stop()
	step(time.Minute, false, "stopped")
}
