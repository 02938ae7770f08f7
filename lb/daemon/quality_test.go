package daemon

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
)

// hold_down keeps a link out of the route after its probes answer again,
// and the quality gauges follow the tracker's window.
func TestHoldDownThroughTheDaemon(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, strings.ReplaceAll(checked, "rise: 2}", "rise: 2, hold_down: 5s}"))
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	h.waitTranscript(both)

	h.probers.set("wan2", false)
	for range 3 {
		h.round()
	}
	h.waitState("isp2", health.StateDown)
	downAt := h.state("isp2").LastChange
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)

	h.probers.set("wan2", true)
	for range 4 { // rise is 2; the hold lasts 5 rounds of 1s
		h.round()
	}
	s := h.state("isp2")
	if want := "held down until " + downAt.Add(5e9).Format("15:04:05") + " (down: 1/1 probes lost to 203.0.113.10, 3 rounds in a row)"; s.State != health.StateDown || s.Reason != want {
		t.Fatalf("isp2 during the hold: %s %q, want down %q", s.State, s.Reason, want)
	}
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)

	h.round()
	h.waitState("isp2", health.StateUp)
	if got := h.state("isp2").LastChange.Sub(downAt); got < 5e9 {
		t.Errorf("up %v after down, before the 5s hold", got)
	}
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2, both)

	// Of isp2's 8 rounds, 3 lost; every answer took 1ms.
	m := h.d.Metrics()
	for name, c := range map[string]struct {
		got, want float64
	}{
		"loss":   {testutil.ToFloat64(m.loss.WithLabelValues("isp2", "ipv4")), 3.0 / 8},
		"rtt":    {testutil.ToFloat64(m.linkRTT.WithLabelValues("isp2", "ipv4")), 0.001},
		"jitter": {testutil.ToFloat64(m.jitter.WithLabelValues("isp2", "ipv4")), 0},
		"isp1":   {testutil.ToFloat64(m.loss.WithLabelValues("isp1", "ipv4")), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s gauge %v, want %v", name, c.got, c.want)
		}
	}
	if s := h.state("isp2"); s.Window != 8 || s.Loss != 3.0/8 || s.RTTMillis != 1 {
		t.Errorf("health of isp2: %+v", s)
	}
}
