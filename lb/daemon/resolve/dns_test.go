package resolve

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A local DNS server: bank.example has an A record (TTL 120) behind a
// CNAME (TTL 300), and AAAA is refused, as some servers do.
func startServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case q.Qtype == dns.TypeAAAA:
			m.Rcode = dns.RcodeRefused
		case q.Name == "bank.example.":
			cn, _ := dns.NewRR("bank.example. 300 IN CNAME edge.bank.example.")
			a, _ := dns.NewRR("edge.bank.example. 120 IN A 203.0.113.50")
			m.Answer = []dns.RR{cn, a}
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDNSLookup(t *testing.T) {
	addr := startServer(t)
	host, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("nameserver %s\noptions timeout:1\n", host)), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := FromResolvConf(conf)
	if err != nil {
		t.Fatal(err)
	}
	// resolv.conf has no port: the test server's is given here.
	d.Servers = []string{net.JoinHostPort(host, port)}
	addrs, ttl, err := d.Lookup(context.Background(), "bank.example")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("203.0.113.50") || ttl != 120*time.Second {
		t.Errorf("bank.example: %v %v %v; want 203.0.113.50 with the smallest TTL, 120s, AAAA's refusal aside", addrs, ttl, err)
	}
	addrs, _, err = d.Lookup(context.Background(), "nope.example")
	if len(addrs) != 0 || err == nil {
		// NXDOMAIN for A, refused AAAA: nothing found, an error to log.
		t.Errorf("nope.example: %v %v", addrs, err)
	}
	if _, err := FromResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing resolv.conf is an error")
	}
}
