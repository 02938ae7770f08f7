package health

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"flowpin/lb/config"
)

// The methods against servers on the loopback, without the link's
// socket options (they need privileges; the integration tests use them).
// The kernel's side is the same: a connect, a request, a query.

var loopback = netip.MustParseAddr("127.0.0.1")

func connProber(c config.HealthCheck) *ConnProber { return &ConnProber{check: c, iface: "lo"} }

func port(t *testing.T, addr net.Addr) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

func TestConnProberTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := connProber(config.HealthCheck{Method: config.ProbeTCP, Port: port(t, ln.Addr())})
	if r := p.Probe([]netip.Addr{loopback}, time.Second); r.Answered != 1 || r.RTT <= 0 || r.Cause != "" {
		t.Errorf("listening: %+v", r)
	}
	ln.Close()
	r := p.Probe([]netip.Addr{loopback}, time.Second)
	if r.Answered != 0 || r.Cause != "connection refused" || len(r.Lost) != 1 {
		t.Errorf("closed: %+v", r)
	}
	if want := "1/1 probes lost to 127.0.0.1 (connection refused)"; r.describe() != want {
		t.Errorf("describe %q, want %q", r.describe(), want)
	}
}

func TestConnProberHTTP(t *testing.T) {
	var mu sync.Mutex
	var hosts, uris []string
	// The slow page answers once the test is over (at most 5 s): only the
	// probe's timeout can end its round in time.
	unblock := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts, uris = append(hosts, r.Host), append(uris, r.RequestURI)
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/moved": // a redirect to a failing page: not followed
			http.Redirect(w, r, "/fail", http.StatusFound)
		case "/fail":
			http.Error(w, "no", http.StatusServiceUnavailable)
		case "/slow":
			select {
			case <-unblock:
			case <-time.After(5 * time.Second):
			}
		}
	}))
	defer srv.Close()
	defer close(unblock) // before Close, which waits for the handlers
	pt := port(t, srv.Listener.Addr())
	// The pages that answer get a timeout no loaded machine reaches (a
	// probe that answers returns at once); the slow one a short one.
	const answers, short = 5 * time.Second, 100 * time.Millisecond
	for _, c := range []struct {
		url      string
		timeout  time.Duration
		answered int
		cause    string
	}{
		{"/ok?full=1", answers, 1, ""},
		{"/moved", answers, 1, ""},
		{"/fail", answers, 0, "http status 503"},
		{"/missing", answers, 1, ""}, // 200 from the handler's default
		{"/slow", short, 0, ""},      // timed out: "lost" says it
	} {
		p := connProber(config.HealthCheck{Method: config.ProbeHTTP, Port: pt, URL: c.url})
		start := time.Now()
		r := p.Probe([]netip.Addr{loopback}, c.timeout)
		if r.Answered != c.answered || r.Cause != c.cause {
			t.Errorf("%s: %+v, want %d answered, cause %q", c.url, r, c.answered, c.cause)
		}
		if took := time.Since(start); c.timeout == short && took > 2*time.Second {
			t.Errorf("%s: the probe took %v with a %v timeout", c.url, took, c.timeout)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "127.0.0.1:" + strconv.Itoa(pt); hosts[0] != want || uris[0] != "/ok?full=1" {
		t.Errorf("first request: Host %q, URI %q; want %q, /ok?full=1", hosts[0], uris[0], want)
	}
	if len(uris) != 5 {
		t.Errorf("requests %v, want one a probe (a redirect followed?)", uris)
	}
}

func TestConnProberDNS(t *testing.T) {
	unblock := make(chan struct{})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		switch q.Question[0].Name {
		case "ok.example.":
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "ok.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 1)})
		case "missing.example.":
			m.Rcode = dns.RcodeNameError
		case "slow.example.":
			// Answers once the probes are done (at most 5 s).
			select {
			case <-unblock:
			case <-time.After(5 * time.Second):
			}
		default:
			m.Rcode = dns.RcodeServerFailure
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ActivateAndServe() }()
	<-started
	pt := port(t, pc.LocalAddr())
	for _, c := range []struct {
		query    string
		answered int
		cause    string
	}{
		{"ok.example", 1, ""},
		{"missing.example", 1, ""}, // NXDOMAIN: the server works
		{"broken.example", 0, "dns SERVFAIL"},
		{"slow.example", 0, ""},
	} {
		p := connProber(config.HealthCheck{Method: config.ProbeDNS, Port: pt, Query: c.query})
		// A timeout no loaded machine reaches for the queries answered
		// (they return at once), a short one for the one that is not.
		timeout := 5 * time.Second
		if c.answered == 0 && c.cause == "" {
			timeout = 100 * time.Millisecond
		}
		r := p.Probe([]netip.Addr{loopback}, timeout)
		if r.Answered != c.answered || r.Cause != c.cause {
			t.Errorf("%s: %+v, want %d answered, cause %q", c.query, r, c.answered, c.cause)
		}
	}
	close(unblock)
	_ = srv.Shutdown()
	<-done
	p := connProber(config.HealthCheck{Method: config.ProbeDNS, Port: pt, Query: "ok.example"})
	if r := p.Probe([]netip.Addr{loopback}, time.Second); r.Answered != 0 || r.Cause != "connection refused" {
		t.Errorf("server stopped: %+v", r)
	}
}

func TestNewConnProberRefusesICMP(t *testing.T) {
	if _, err := NewConnProber(config.HealthCheck{Method: config.ProbeICMP}, "lo", 0x100); err == nil {
		t.Error("icmp accepted")
	}
	if _, err := NewConnProber(config.HealthCheck{Method: config.ProbeTCP}, "lo", 0x100); err == nil {
		t.Error("tcp without a port accepted")
	}
}
