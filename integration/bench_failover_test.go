package integration

import (
	"testing"
	"time"
)

// BenchmarkFailover measures how long new LAN connections fail after a
// link dies, with the settings (probes every 300ms, fall 3), for a
// silent upstream failure and for carrier loss. The baseline in the same
// run is the configured detection time (interval x fall = 900ms): the
// ratio says how much the rest (sync, flush, the client's own retry)
// adds.
//
//	make bench   (go test -run '^$' -bench Failover ./integration/)
func BenchmarkFailover(b *testing.B) {
	const detect = 900 * time.Millisecond
	for _, kind := range []string{"silent", "carrier"} {
		b.Run(kind, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				d := newDualWAN(b)
				srv := startEchoServer(b, d.Far, d.Service+":0")
				startDaemon(b, d.Router, checkedConfig(d, d.GW2))
				untilAllSucceed(b, d, srv, time.Now(), 5*time.Second)
				b.StartTimer()
				start := time.Now()
				if kind == "silent" {
					blackhole(b, d.ISP2)
				} else {
					run(b, d.ISP2, "ip", "link", "set", "cust", "down")
				}
				total += untilAllSucceed(b, d, srv, start, 10*time.Second)
			}
			ms := float64(total.Milliseconds()) / float64(b.N)
			b.ReportMetric(ms, "failover-ms")
			b.ReportMetric(ms/float64(detect.Milliseconds()), "x-detect-time")
		})
	}
}
