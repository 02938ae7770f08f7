package integration

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// BenchmarkProbeDetect measures how long probes alone take to notice a
// silent upstream failure with the default check (a round every 300ms,
// each waiting at most until the next is due, fall 3): from the moment
// isp2's upstream drops everything to the daemon's down, with no traffic
// on the links, so the passive detection has nothing to go on. The
// baseline in the same run is interval x fall (900ms); the worst case is
// one round more (the round under way when the failure began), 1.2 s.
//
//	go test -run '^$' -bench ProbeDetect -benchtime 5x ./integration/
func BenchmarkProbeDetect(b *testing.B) {
	const detect = 900 * time.Millisecond
	var total, worst time.Duration
	for range b.N {
		b.StopTimer()
		d := newDualWAN(b)
		dm := startDaemon(b, d.Router, qualityConfig(d, fmt.Sprintf("{targets: [%s]}", d.Service)))
		dm.waitQuality(b, "isp2", 5*time.Second, "up with a few rounds", func(l linkJSON) bool { return l.State == "up" && l.Window >= 3 })
		// The wait ends just after a round: start the failure at a random
		// point of the next one, as a real one would.
		time.Sleep(rand.N(300 * time.Millisecond))
		b.StartTimer()
		start := time.Now()
		blackhole(b, d.ISP2)
		l := dm.waitQuality(b, "isp2", 5*time.Second, "down", isState("down"))
		took := l.StateSince.Sub(start)
		if !strings.Contains(l.Reason, "rounds in a row") {
			b.Fatalf("not taken down by its probes: %q", l.Reason)
		}
		total += took
		worst = max(worst, took)
		b.StopTimer()
		_, _ = dm.stop()
	}
	ms := float64(total.Milliseconds()) / float64(b.N)
	b.ReportMetric(ms, "detect-ms")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
	b.ReportMetric(ms/float64(detect.Milliseconds()), "x-interval-fall")
}
