package daemon

import (
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
