package daemon

import (
	"testing"

	"flowpin/lb/config/configtest"
)

// A sync that rewrites the table resets the rules' counters; the link's
// bytes and packets and the rules' hits go on from where they were.
func TestCountersCarriedOverRewrite(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, checked+"rules:\n  - {name: voip, proto: udp, dst_ports: [5060], policy: isp2}\n")
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	fc := &fakeCounters{}
	fc.add("prerouting restore isp1", 10, 1000)
	fc.add("prerouting from isp1", 20, 2000)
	fc.add("rule voip", 3, 300)
	h.flows, h.traffic, h.hits = newFakeFlowTable(), fc, fc
	h.start()
	h.waitTranscript(both)
	m := h.d.Metrics()
	if err := m.RegisterRuleMetrics(h.c, h.d); err != nil {
		t.Fatal(err)
	}
	check := func(when string, out, in, hits float64) {
		t.Helper()
		if got := metricValue(t, m, "flowpin_link_bytes_total", map[string]string{"link": "isp1", "direction": "out"}); got != out {
			t.Errorf("%s: bytes out %v, want %v", when, got, out)
		}
		if got := metricValue(t, m, "flowpin_link_packets_total", map[string]string{"link": "isp1", "direction": "in"}); got != in {
			t.Errorf("%s: packets in %v, want %v", when, got, in)
		}
		if got := metricValue(t, m, "flowpin_rule_hits_total", map[string]string{"rule": "voip"}); got != hits {
			t.Errorf("%s: rule hits %v, want %v", when, got, hits)
		}
		if h, err := h.d.RuleHits(); err != nil || float64(h["voip"].Packets) != hits {
			t.Errorf("%s: RuleHits %v, %v; want %v", when, h, err, hits)
		}
	}
	check("before", 1000, 20, 3)

	// The next sync writes the table: every counter starts again.
	h.k.mu.Lock()
	h.k.rewrite = fc.reset
	h.k.mu.Unlock()
	h.events.send(Event{Kind: EventDrift, What: "nft table changed"})
	h.advanceSync()
	h.waitTranscript(both, both)
	fc.add("prerouting restore isp1", 1, 100)
	fc.add("prerouting from isp1", 2, 200)
	fc.add("rule voip", 1, 100)
	check("after the daemon rewrote the table", 1100, 22, 4)

	// Someone else rewrites it: the fall shows it.
	fc.reset()
	fc.add("prerouting restore isp1", 1, 50)
	check("after a rewrite by someone else", 1150, 22, 4)
}

// metricValue is the value of the series of name with labels (0 with a
// test error when there is none).
func metricValue(t *testing.T, m *Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			if c := s.GetCounter(); c != nil {
				return c.GetValue()
			}
			return s.GetGauge().GetValue()
		}
	}
	t.Errorf("no series %s%v", name, labels)
	return 0
}
