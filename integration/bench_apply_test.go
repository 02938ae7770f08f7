package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// manyLinks builds a router namespace with n veth uplinks to one peer
// namespace: router l<i> 100.64.<i>.2/24, gateway 100.64.<i>.1 on the peer.
// It returns the router namespace and a config with every link.
func manyLinks(b *testing.B, n int) (string, string) {
	l := newLab(b)
	router, peer := l.addNS("router"), l.addNS("peer")
	var cfg strings.Builder
	cfg.WriteString("links:\n")
	for i := range n {
		dev := fmt.Sprintf("l%d", i)
		veth(b, router, dev, peer, dev)
		addAddr(b, router, dev, fmt.Sprintf("100.64.%d.2/24", i))
		addAddr(b, peer, dev, fmt.Sprintf("100.64.%d.1/24", i))
		fmt.Fprintf(&cfg, "  - {name: isp%d, interface: %s, gateway: 100.64.%d.1, weight: %d, nat: true}\n", i, dev, i, 1+i%4)
	}
	return router, cfg.String()
}

// BenchmarkApply times `flowpin apply` on an empty namespace against the
// seed-style way of doing the same: a shell script of ip, sysctl and nft
// commands (flowpin's own `plan --full` output, which is what an operator
// would type), both in the same run. It also times a no-change re-apply
// and counts its kernel writes (the goal is zero).
//
//	make bench   (go test -run '^$' -bench Apply ./integration/)
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{2, 8, 32, 64} {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			if flowpinBin == "" {
				b.Skip("flowpin binary not built")
			}
			router, cfg := manyLinks(b, n)
			path := writeFile(b, "flowpin.yaml", cfg)
			script, err := tryRun(router, flowpinBin, "plan", "--full", "-c", path)
			if err != nil {
				b.Fatal(err, script)
			}
			down := func() {
				if out, err := tryRun(router, flowpinBin, "down"); err != nil {
					b.Fatal(err, out)
				}
				// The script leaves the table behind like apply does; down
				// removes both the same way (same tags).
			}
			var tApply, tScript, tReapply time.Duration
			writes := 0
			b.ResetTimer()
			for range b.N {
				down()
				start := time.Now()
				if out, err := tryRun(router, flowpinBin, "apply", "-c", path); err != nil {
					b.Fatal(err, out)
				}
				tApply += time.Since(start)

				start = time.Now()
				out, err := tryRun(router, flowpinBin, "apply", "-c", path)
				tReapply += time.Since(start)
				if err != nil {
					b.Fatal(err, out)
				}
				var w int
				if _, err := fmt.Sscanf(out[strings.Index(out, "route, ")+len("route, "):], "%d kernel writes", &w); err != nil {
					b.Fatalf("parse %q: %v", out, err)
				}
				writes += w

				down()
				start = time.Now()
				if out, err := tryRunStdin(router, script, "bash", "-e"); err != nil {
					b.Fatal(err, out)
				}
				tScript += time.Since(start)
			}
			b.StopTimer()
			down()
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(ms(tApply), "apply-ms")
			b.ReportMetric(ms(tScript), "script-ms")
			b.ReportMetric(ms(tApply)/ms(tScript), "apply/script")
			b.ReportMetric(ms(tReapply), "reapply-ms")
			b.ReportMetric(float64(writes)/float64(b.N), "reapply-writes")
		})
	}
}
