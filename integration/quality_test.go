package integration

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// qualityConfig: isp1 probes the far host with the defaults; isp2 with
// the check given (a YAML flow mapping).
func qualityConfig(d *dualWAN, check2 string) string {
	return checkedLinks(d, d.GW2, 0, fmt.Sprintf("{targets: [%s]}", d.Service), check2)
}

func (dm *daemon) quality(t testing.TB, link string) linkJSON {
	t.Helper()
	l, ok := dm.linkStates(t)[link]
	if !ok {
		t.Fatalf("no link %s in status", link)
	}
	return l
}

// waitQuality polls status until ok holds for link, or fails after limit.
func (dm *daemon) waitQuality(t testing.TB, link string, limit time.Duration, what string, ok func(linkJSON) bool) linkJSON {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		l := dm.quality(t, link)
		if ok(l) {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s: not %s after %v: %+v", link, what, limit, l)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

func isState(s string) func(linkJSON) bool {
	return func(l linkJSON) bool { return l.State == s }
}

// slowResponder answers ICMP echo to addr in ns in place of the kernel
// (net.ipv4.icmp_echo_ignore_all=1 there), delaying the replies to one
// source while delay is set: a path that still answers, slowly.
type slowResponder struct {
	conn  *net.IPConn
	slow  netip.Addr
	delay atomic.Int64 // nanoseconds
	wg    sync.WaitGroup
}

func startSlowResponder(t testing.TB, ns, addr string, slow string) *slowResponder {
	t.Helper()
	setSysctl(t, ns, "net.ipv4.icmp_echo_ignore_all", "1")
	r := &slowResponder{slow: netip.MustParseAddr(slow)}
	inNS(t, ns, func() error {
		c, err := net.ListenPacket("ip4:icmp", addr)
		if err != nil {
			return err
		}
		r.conn = c.(*net.IPConn)
		return nil
	})
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() { r.conn.Close(); r.wg.Wait() })
	return r
}

func (r *slowResponder) serve() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEcho {
			continue
		}
		reply, err := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: m.Body}).Marshal(nil)
		if err != nil {
			continue
		}
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		var wait time.Duration
		if src.Unmap() == r.slow {
			wait = time.Duration(r.delay.Load())
		}
		r.wg.Add(1)
		time.AfterFunc(wait, func() {
			defer r.wg.Done()
			_, _ = r.conn.WriteTo(reply, from)
		})
	}
}

// A link whose replies slow to 250 ms goes down under max_rtt 100ms,
// and comes back once they are fast again, but not before hold_down.
func TestQualityMaxRTT(t *testing.T) {
	d := newDualWAN(t)
	resp := startSlowResponder(t, d.Far, d.Service, d.WAN2)
	const hold = 4 * time.Second
	dm := startDaemon(t, d.Router, qualityConfig(d, fmt.Sprintf("{targets: [%s], max_rtt: 100ms, hold_down: %v}", d.Service, hold)))
	before := dm.waitQuality(t, "isp2", 3*time.Second, "up with a few rounds", func(l linkJSON) bool { return l.State == "up" && l.Window >= 3 })
	if before.RTTMillis <= 0 || before.RTTMillis > 50 {
		t.Errorf("rtt before the delay: %v ms", before.RTTMillis)
	}

	start := time.Now()
	resp.delay.Store(int64(250 * time.Millisecond))
	down := dm.waitQuality(t, "isp2", 3*time.Second, "down", isState("down"))
	t.Logf("down %v after the delay began: %q", time.Since(start).Round(time.Millisecond), down.Reason)
	if !regexp.MustCompile(`^down: rtt 25\d ms > 100 ms for 3 rounds$`).MatchString(down.Reason) {
		t.Errorf("reason %q", down.Reason)
	}
	if s := dm.quality(t, "isp1"); s.State != "up" {
		t.Errorf("isp1 is %s: %s", s.State, s.Reason)
	}

	resp.delay.Store(0)
	held := dm.waitQuality(t, "isp2", 3*time.Second, "held down", func(l linkJSON) bool { return strings.HasPrefix(l.Reason, "held down until ") })
	want := fmt.Sprintf("held down until %s (%s)", down.StateSince.Add(hold).Local().Format("15:04:05"), down.Reason)
	if held.State != "down" || held.Reason != want {
		t.Errorf("held: %s %q, want down %q", held.State, held.Reason, want)
	}
	up := dm.waitQuality(t, "isp2", hold+3*time.Second, "up again", isState("up"))
	took := up.StateSince.Sub(down.StateSince)
	t.Logf("up again %v after it went down (hold_down %v): %q; rtt %.2f ms, jitter %.2f ms", took.Round(time.Millisecond), hold, up.Reason, up.RTTMillis, up.JitterMS)
	if took < hold {
		t.Errorf("back up %v after going down, before hold_down %v", took, hold)
	}
	if took > hold+2*time.Second {
		t.Errorf("back up only %v after going down; hold_down is %v and the replies were fast again at once", took, hold)
	}
}

// lossyRuleset drops every second echo request that arrives on iface:
// good and bad rounds alternate exactly, whatever the timing, so fall 3
// never triggers.
func lossyRuleset(iface string) string {
	return fmt.Sprintf(`table ip lossy {
	chain in {
		type filter hook input priority -10;
		iifname "%s" icmp type echo-request numgen inc mod 2 == 0 counter drop
	}
}
`, iface)
}

func TestQualityMaxLoss(t *testing.T) {
	d := newDualWAN(t)
	dm := startDaemon(t, d.Router, qualityConfig(d, fmt.Sprintf("{targets: [%s], max_loss: 20%%, fall: 3, rise: 3}", d.Service)))
	dm.waitQuality(t, "isp2", 5*time.Second, "up with a full window", func(l linkJSON) bool { return l.State == "up" && l.Window == 10 })

	start := time.Now()
	nft(t, d.Far, lossyRuleset("isp2"))
	down := dm.waitQuality(t, "isp2", 6*time.Second, "down", isState("down"))
	t.Logf("down %v after half the probes began to go: %q (loss %.2f)", time.Since(start).Round(time.Millisecond), down.Reason, down.Loss)
	if !regexp.MustCompile(`^down: loss [3-6]0% > 20% over 10 rounds$`).MatchString(down.Reason) {
		t.Errorf("reason %q: not the loss over the window", down.Reason)
	}
	if strings.Contains(dm.logs(), "rounds in a row") {
		t.Errorf("fall triggered: the rounds did not alternate\n%s", dm.logs())
	}
	if s := dm.quality(t, "isp1"); s.State != "up" || s.Loss != 0 {
		t.Errorf("isp1: %+v", s)
	}
	// Still alternating: it stays down.
	time.Sleep(time.Second)
	if s := dm.quality(t, "isp2"); s.State != "down" || s.Loss < 0.3 {
		t.Errorf("isp2 while still lossy: %+v", s)
	}

	run(t, d.Far, "nft", "delete", "table", "ip", "lossy")
	up := dm.waitQuality(t, "isp2", 6*time.Second, "up again", isState("up"))
	t.Logf("up again: %q, loss %.2f", up.Reason, up.Loss)
	if up.Loss > 0.2 {
		t.Errorf("up with loss %.2f over the window", up.Loss)
	}
}

// probeServer is a server of one probe method in the far namespace that
// records where its clients came from.
type probeServer struct {
	mu      sync.Mutex
	sources map[netip.Addr]int
	stop    func()
	// fail makes an http server answer 503 and a dns server SERVFAIL.
	fail atomic.Bool
}

func (s *probeServer) saw(a netip.Addr) {
	s.mu.Lock()
	s.sources[a.Unmap()]++
	s.mu.Unlock()
}

func (s *probeServer) Sources() map[netip.Addr]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Addr]int{}
	for k, v := range s.sources {
		out[k] = v
	}
	return out
}

func startProbeServer(t testing.TB, method, ns, addr string) *probeServer {
	t.Helper()
	s := &probeServer{sources: map[netip.Addr]int{}}
	switch method {
	case "tcp", "http":
		var ln net.Listener
		inNS(t, ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
		if method == "tcp" {
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					s.saw(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
					c.Close()
				}
			}()
			s.stop = func() { ln.Close(); <-done }
			break
		}
		srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ap, err := netip.ParseAddrPort(r.RemoteAddr)
			if err == nil {
				s.saw(ap.Addr())
			}
			if r.URL.Path != "/health" || r.Host != strings.Split(addr, ":")[0]+":8080" {
				http.Error(w, "wrong path or host: "+r.Host+r.URL.Path, http.StatusNotFound)
				return
			}
			if s.fail.Load() {
				http.Error(w, "failing", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})}
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ln) }()
		s.stop = func() { srv.Close(); <-done }
	case "dns":
		var pc net.PacketConn
		inNS(t, ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err })
		srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			if ua, ok := w.RemoteAddr().(*net.UDPAddr); ok {
				s.saw(ua.AddrPort().Addr())
			}
			m := new(dns.Msg)
			m.SetReply(q)
			if len(q.Question) == 1 && q.Question[0].Name == "probe.example." {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "probe.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 99)})
			} else {
				m.Rcode = dns.RcodeRefused
			}
			if s.fail.Load() {
				m.Answer, m.Rcode = nil, dns.RcodeServerFailure
			}
			_ = w.WriteMsg(m)
		})}
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.ActivateAndServe() }()
		<-started
		s.stop = func() { _ = srv.Shutdown(); <-done }
	default:
		t.Fatalf("method %s", method)
	}
	var once sync.Once
	stop := s.stop
	s.stop = func() { once.Do(stop) }
	t.Cleanup(s.stop)
	return s
}

// Each probe method against a real server in the far namespace: the link
// is up while it answers; down when the link's upstream goes silent (so
// the probes do leave by the link: the other link still reaches the
// server); up again; down when the server stops.
func TestProbeMethods(t *testing.T) {
	d := newDualWAN(t)
	for _, c := range []struct {
		method, listen, check string
		failing               string // the cause when the server answers, failing
	}{
		{"tcp", d.Service + ":7443", "method: tcp, port: 7443", ""},
		{"http", d.Service + ":8080", "method: http, port: 8080, url: /health", "(http status 503)"},
		{"dns", d.Service + ":53", "method: dns, query: probe.example", "(dns SERVFAIL)"},
	} {
		t.Run(c.method, func(t *testing.T) {
			srv := startProbeServer(t, c.method, d.Far, c.listen)
			dm := startDaemon(t, d.Router, qualityConfig(d, fmt.Sprintf("{targets: [%s], interval: 200ms, %s}", d.Service, c.check)))
			up := dm.waitQuality(t, "isp2", 5*time.Second, "up and answered", func(l linkJSON) bool {
				return l.State == "up" && l.Window >= 3 && l.Loss == 0 && l.RTTMillis > 0
			})
			t.Logf("%s probes: rtt %.2f ms, jitter %.2f ms", c.method, up.RTTMillis, up.JitterMS)

			restore := blackhole(t, d.ISP2)
			l := dm.waitQuality(t, "isp2", 3*time.Second, "down on a silent upstream", isState("down"))
			if want := "down: 1/1 probes lost to " + d.Service + ", 3 rounds in a row"; l.Reason != want {
				t.Errorf("reason %q, want %q", l.Reason, want)
			}
			if s := dm.quality(t, "isp1"); s.State != "up" {
				t.Errorf("isp1 %s: %s", s.State, s.Reason)
			}
			restore()
			dm.waitQuality(t, "isp2", 5*time.Second, "up again", isState("up"))

			if c.failing != "" {
				srv.fail.Store(true)
				l = dm.waitQuality(t, "isp2", 3*time.Second, "down with the server failing", isState("down"))
				if want := "down: 1/1 probes lost to " + d.Service + " " + c.failing + ", 3 rounds in a row"; l.Reason != want {
					t.Errorf("reason %q, want %q", l.Reason, want)
				}
				srv.fail.Store(false)
				dm.waitQuality(t, "isp2", 5*time.Second, "up again", isState("up"))
			}

			srv.stop()
			l = dm.waitQuality(t, "isp2", 3*time.Second, "down with the server stopped", isState("down"))
			if want := "down: 1/1 probes lost to " + d.Service + " (connection refused), 3 rounds in a row"; l.Reason != want {
				t.Errorf("reason %q, want %q", l.Reason, want)
			}
			// Every probe came from isp2's address: out of wan2, past
			// ISP2's source filter.
			src := srv.Sources()
			var from []string
			for a := range src {
				from = append(from, a.String())
			}
			sort.Strings(from)
			if len(src) != 1 || src[netip.MustParseAddr(d.WAN2)] == 0 {
				t.Errorf("the server saw probes from %v, want only %s", from, d.WAN2)
			}
			if _, err := dm.stop(); err != nil {
				t.Error(err)
			}
		})
	}
}
