package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/daemon/passive"
	"flowpin/lb/health"
	"flowpin/nft/ct"
)

// suspectISP2 starts a daemon that follows conntrack and makes isp2
// suspect: four of its new TCP flows go unanswered past the window,
// while isp1's are answered.
func suspectISP2(t *testing.T, probesAnswer bool) *harness {
	t.Helper()
	h := newHarness(t)
	h.flows = newFakeFlowTable()
	h.start()
	h.waitTranscript(both)
	h.eventually("flow counts ready", func() bool { _, ok := h.d.flows.Counts(); return ok })
	// A suspicion before Run took the probe loops finds no loop to ask
	// for a burst (and the cooldown then holds the next one back).
	h.eventually("probe loops taken", func() bool {
		return h.d.board.Armed()
	})
	h.probers.set("wan2", probesAnswer)
	var evs []ct.Event
	for i := range uint32(4) {
		evs = append(evs,
			ct.Event{Type: ct.EventNew, ID: 10 + i, Mark: 0x100, Proto: 6, Family: v4},
			ct.Event{Type: ct.EventUpdate, ID: 10 + i, Mark: 0x100, Proto: 6, Family: v4, SeenReply: true},
			ct.Event{Type: ct.EventNew, ID: 20 + i, Mark: 0x200, Proto: 6, Family: v4},
		)
	}
	h.flows.Send(evs...)
	h.flows.Settle()
	before := h.probers.count("wan2")
	h.clock.Advance(passive.Default.Window + passive.TickEvery)
	// One burst: a single Probe call, the target three times.
	h.eventually("burst probe of wan2", func() bool { return h.probers.count("wan2") == before+1 })
	return h
}

// A suspect link whose burst of probes goes unanswered is down at once,
// and says why; not after fall rounds.
func TestSuspicionBurstTakesLinkDown(t *testing.T) {
	h := suspectISP2(t, false)
	h.waitState("isp2", health.StateDown)
	if r := h.state("isp2").Reason; !strings.Contains(r, "3/3 burst probes lost to 203.0.113.10 after 3 of its last 3 new flows went unanswered for 400ms (baseline 4%, other links at most 0%)") {
		t.Errorf("reason %q", r)
	}
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	if v := testutil.ToFloat64(h.d.Metrics().bursts.WithLabelValues("isp2", "ipv4", "down")); v != 1 {
		t.Errorf("bursts down %v", v)
	}
	if h.state("isp1").State != health.StateUp {
		t.Error("isp1 went down")
	}
}

// The traffic only triggers the check: probes that answer keep the link
// up.
func TestSuspicionClearedByProbes(t *testing.T) {
	h := suspectISP2(t, true)
	h.eventually("burst cleared", func() bool {
		return testutil.ToFloat64(h.d.Metrics().bursts.WithLabelValues("isp2", "ipv4", "cleared")) == 1
	})
	time.Sleep(20 * time.Millisecond)
	if s := h.state("isp2"); s.State != health.StateUp {
		t.Errorf("isp2 %+v, want up", s)
	}
	h.waitTranscript(both)
}
