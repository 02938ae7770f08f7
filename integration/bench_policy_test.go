package integration

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// policyRules is a config fragment with 8 policies over the links and n
// traffic rules (destination /24s, some with ports), none of which the
// benchmark's own traffic matches until the last, which matches its
// port: every new flow pays a full classification.
func policyRules(links []string, n, port int) string {
	var b strings.Builder
	b.WriteString("policies:\n")
	for p := range 8 {
		fmt.Fprintf(&b, "  - {name: p%d, tiers: [[%s], [%s]]}\n", p, links[p%len(links)], links[(p+1)%len(links)])
	}
	b.WriteString("rules:\n")
	for i := range n - 1 {
		fmt.Fprintf(&b, "  - {name: r%d, dst: [10.%d.%d.0/24], policy: p%d}\n", i, 100+i/250, i%250, i%8)
		if i%4 == 0 {
			fmt.Fprintf(&b, "  - {name: r%dp, proto: tcp, dst: [10.%d.%d.0/24], dst_ports: [%d], policy: p%d}\n", i, 150+i/250, i%250, 1000+i, i%8)
		}
	}
	fmt.Fprintf(&b, "  - {name: last, proto: tcp, dst_ports: [%d], policy: default}\n", port)
	return b.String()
}

// countRules is how many traffic rules a policyRules fragment holds.
func countRules(frag string) int {
	return strings.Count(frag, "- {name: r") + strings.Count(frag, "- {name: last")
}

// BenchmarkPolicyApply times `flowpin apply` on an empty namespace with 8
// links, with 8 policies and 200 traffic rules against the links alone,
// in the same run.
//
//	make bench   (go test -run '^$' -bench PolicyApply ./integration/)
func BenchmarkPolicyApply(b *testing.B) {
	if flowpinBin == "" {
		b.Skip("flowpin binary not built")
	}
	router, links := manyLinks(b, 8)
	frag := policyRules([]string{"isp0", "isp1", "isp2", "isp3", "isp4", "isp5", "isp6", "isp7"}, 160, 9)
	n := countRules(frag)
	plain := writeFile(b, "plain.yaml", links)
	withRules := writeFile(b, "rules.yaml", links+frag)
	apply := func(path string) time.Duration {
		if out, err := tryRun(router, flowpinBin, "down"); err != nil {
			b.Fatal(err, out)
		}
		start := time.Now()
		if out, err := tryRun(router, flowpinBin, "apply", "-c", path); err != nil {
			b.Fatal(err, out)
		}
		return time.Since(start)
	}
	var tPlain, tRules time.Duration
	b.ResetTimer()
	for range b.N {
		tPlain += apply(plain)
		tRules += apply(withRules)
	}
	b.StopTimer()
	msPlain := float64(tPlain.Microseconds()) / 1000 / float64(b.N)
	msRules := float64(tRules.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(msPlain, "ms/apply-8-links")
	b.ReportMetric(msRules, "ms/apply-8-links-8-policies-rules")
	b.ReportMetric(msRules/msPlain, "x")
	b.Logf("apply, 8 links: %.1f ms alone, %.1f ms with 8 policies and %d rules (%.2fx)", msPlain, msRules, n, msRules/msPlain)
}

// sink accepts connections and reads them to the end, counting bytes; or,
// with closeAtOnce, closes each at once (a new-flow rate target).
type sink struct {
	ln    net.Listener
	bytes atomic.Int64
	conns atomic.Int64
}

func startSink(b testing.TB, ns, addr string) *sink {
	s := &sink{}
	inNS(b, ns, func() error {
		var err error
		s.ln, err = net.Listen("tcp4", addr)
		return err
	})
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				s.bytes.Add(n)
			}()
		}
	}()
	b.Cleanup(func() { s.ln.Close() })
	return s
}

// BenchmarkPolicyForwarding measures what the traffic rules cost the data
// path of a NAT router: forwarded TCP throughput (one stream) and the rate
// of new flows (connect and close, 4 at a time), with 200 rules against 0
// rules, alternating in the same run. Only a flow's first packet meets the
// rules (one map lookup per layer); established packets pay the restore.
func BenchmarkPolicyForwarding(b *testing.B) {
	if flowpinBin == "" {
		b.Skip("flowpin binary not built")
	}
	d := newDualWAN(b)
	const port = 7100
	frag := policyRules([]string{"isp1", "isp2"}, 160, port)
	n := countRules(frag)
	plain := writeFile(b, "plain.yaml", d.config(1, 1))
	withRules := writeFile(b, "rules.yaml", d.config(1, 1)+frag)
	apply := func(path string) {
		if out, err := tryRun(d.Router, flowpinBin, "apply", "-c", path); err != nil {
			b.Fatal(err, out)
		}
	}
	sk := startSink(b, d.Far, fmt.Sprintf("%s:%d", d.Service, port))
	const span = 2 * time.Second
	throughput := func() float64 {
		before := sk.bytes.Load()
		var c net.Conn
		inNS(b, d.LAN, func() error {
			var err error
			c, err = net.Dial("tcp4", sk.ln.Addr().String())
			return err
		})
		buf := make([]byte, 64<<10)
		deadline := time.Now().Add(span)
		for time.Now().Before(deadline) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
		return float64(sk.bytes.Load()-before) * 8 / span.Seconds() / 1e9
	}
	flowRate := func() float64 {
		var total atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = nsDo(d.LAN, func() error {
					deadline := time.Now().Add(span)
					for time.Now().Before(deadline) {
						c, err := net.DialTimeout("tcp4", sk.ln.Addr().String(), time.Second)
						if err != nil {
							continue
						}
						// Close with a reset: no TIME_WAIT, so the client's
						// ports do not run out between the runs compared.
						_ = c.(*net.TCPConn).SetLinger(0)
						c.Close()
						total.Add(1)
					}
					return nil
				})
			}()
		}
		wg.Wait()
		return float64(total.Load()) / span.Seconds()
	}
	var gb [2]float64
	var fps [2]float64
	b.ResetTimer()
	for range b.N {
		// Both orders, so that neither setting always runs second.
		for _, i := range []int{0, 1, 1, 0} {
			apply([]string{plain, withRules}[i])
			gb[i] += throughput() / 2
			fps[i] += flowRate() / 2
		}
	}
	b.StopTimer()
	for i := range 2 {
		gb[i] /= float64(b.N)
		fps[i] /= float64(b.N)
	}
	b.ReportMetric(gb[1]/gb[0], "throughput-ratio")
	b.ReportMetric(fps[1]/fps[0], "new-flow-ratio")
	b.Logf("forwarded TCP throughput: %.2f Gbit/s with 0 rules, %.2f Gbit/s with %d rules (%.2fx)", gb[0], gb[1], n, gb[1]/gb[0])
	b.Logf("new flows per second: %.0f with 0 rules, %.0f with %d rules (%.2fx)", fps[0], fps[1], n, fps[1]/fps[0])
}
