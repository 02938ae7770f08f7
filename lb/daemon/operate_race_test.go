package daemon

import (
	"context"
	"errors"
	"testing"

	"flowpin/lb/daemon/operator"
)

// SetLink's last-link check runs on the caller's goroutine (the API's)
// and reads the plan last applied, while the loop syncs and records new
// plans. It read the loop's own field: a data race, which this test makes
// the race detector (make unit runs -race) report.
func TestSetLinkCheckWhileTheLoopSyncs(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			h.events.send(Event{Kind: EventDrift, What: "a route changed"})
			h.clock.Advance(MinSyncInterval)
		}
	}()
	for range 20 {
		setLink(t, h, "isp1", operator.Drain) // checked: isp2 is left
		setLink(t, h, "isp1", operator.Auto)
	}
	<-done
}

// Two operators draining the two links at once: one is refused, as when
// they come one after the other. The check and the store were two steps,
// and two calls could both pass the check before either stored its mode,
// leaving no link for new flows.
func TestSetLinkDrainsAtOnceLeaveALink(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	for i := range 2000 {
		errs := make(chan error, 2)
		start := make(chan struct{})
		for _, name := range []string{"isp1", "isp2"} {
			go func() {
				<-start
				_, err := h.d.SetLink(context.Background(), name, operator.Drain, false)
				errs <- err
			}()
		}
		close(start)
		refused := 0
		for range 2 {
			if err := <-errs; errors.Is(err, ErrLastLink) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if refused != 1 {
			t.Fatalf("round %d: %d of two drains at once refused, want 1", i, refused)
		}
		for _, name := range []string{"isp1", "isp2"} {
			setLink(t, h, name, operator.Auto)
		}
	}
}
