package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// manyLinks6 is manyLinks with IPv6 beside IPv4 on every uplink: router
// l<i> 100.64.<i>.2/24 and 2001:db8:<i>::2/64, gateways .1 and ::1 on the
// peer. It returns the router namespace, an IPv4-only config and a
// dual-stack config of the same links.
func manyLinks6(b *testing.B, n int) (router, cfg4, cfg46 string) {
	l := newLab6(b)
	router, peer := l.addNS("router"), l.addNS("peer")
	var c4, c46 strings.Builder
	c4.WriteString("links:\n")
	c46.WriteString("links:\n")
	for i := range n {
		dev := fmt.Sprintf("l%d", i)
		veth(b, router, dev, peer, dev)
		addAddr(b, router, dev, fmt.Sprintf("100.64.%d.2/24", i))
		addAddr(b, peer, dev, fmt.Sprintf("100.64.%d.1/24", i))
		addAddr6(b, router, dev, fmt.Sprintf("2001:db8:%x::2/64", i))
		addAddr6(b, peer, dev, fmt.Sprintf("2001:db8:%x::1/64", i))
		fmt.Fprintf(&c4, "  - {name: isp%d, interface: %s, gateway: 100.64.%d.1, weight: %d, nat: true}\n", i, dev, i, 1+i%4)
		fmt.Fprintf(&c46, "  - {name: isp%d, interface: %s, gateway: 100.64.%d.1, gateway6: 2001:db8:%x::1, weight: %d, nat: true}\n", i, dev, i, i, 1+i%4)
	}
	settle6(b, router, peer)
	return router, c4.String(), c46.String()
}

// BenchmarkApply6 times `flowpin apply` of dual-stack links against the same
// links IPv4-only, in the same namespace and run (each from nothing, after
// a down; the order alternates), and a no-change re-apply of the
// dual-stack config with its kernel writes (the goal is zero).
//
//	go test -run '^$' -bench Apply6 ./integration/
func BenchmarkApply6(b *testing.B) {
	for _, n := range []int{2, 64} {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			if flowpinBin == "" {
				b.Skip("flowpin binary not built")
			}
			router, cfg4, cfg46 := manyLinks6(b, n)
			path4 := writeFile(b, "v4.yaml", cfg4)
			path46 := writeFile(b, "v46.yaml", cfg46)
			down := func() {
				if out, err := tryRun(router, flowpinBin, "down"); err != nil {
					b.Fatal(err, out)
				}
			}
			// applyOnce runs apply and returns its time and kernel writes.
			applyOnce := func(path string) (time.Duration, int) {
				start := time.Now()
				out, err := tryRun(router, flowpinBin, "apply", "-c", path)
				d := time.Since(start)
				if err != nil {
					b.Fatal(err, out)
				}
				m := writesRE.FindStringSubmatch(out)
				if m == nil {
					b.Fatalf("no write count in %q", out)
				}
				var w int
				fmt.Sscan(m[1], &w)
				return d, w
			}
			var t4, t46, tRe time.Duration
			var w4, w46, wRe int
			b.ResetTimer()
			for i := range b.N {
				for _, v6 := range []bool{i%2 == 0, i%2 != 0} {
					down()
					if v6 {
						d, w := applyOnce(path46)
						t46 += d
						w46 += w
						d, w = applyOnce(path46)
						tRe += d
						wRe += w
					} else {
						d, w := applyOnce(path4)
						t4 += d
						w4 += w
					}
				}
			}
			b.StopTimer()
			down()
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			per := func(w int) float64 { return float64(w) / float64(b.N) }
			b.ReportMetric(ms(t4), "apply-v4-ms")
			b.ReportMetric(ms(t46), "apply-dual-ms")
			b.ReportMetric(ms(t46)/ms(t4), "dual/v4")
			b.ReportMetric(per(w4), "apply-v4-writes")
			b.ReportMetric(per(w46), "apply-dual-writes")
			b.ReportMetric(ms(tRe), "reapply-dual-ms")
			b.ReportMetric(per(wRe), "reapply-dual-writes")
			b.Logf("%d links: apply IPv4-only %.1f ms (%.0f writes), dual-stack %.1f ms (%.0f writes), x%.2f; dual-stack re-apply %.1f ms, %.1f writes",
				n, ms(t4), per(w4), ms(t46), per(w46), ms(t46)/ms(t4), ms(tRe), per(wRe))
		})
	}
}
