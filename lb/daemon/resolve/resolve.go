// Package resolve is the daemon's own resolver for domain sets with
// `resolve: true`, for hosts whose resolver cannot fill nftables sets
// (unbound, systemd-resolved): it looks the set's names up (A and AAAA)
// through the servers of /etc/resolv.conf, adds the addresses to the
// set's IPv4 and IPv6 sets, and looks them up again when their TTL runs
// out.
//
// Limits, by the nature of DNS: it knows only the names listed, not their
// subdomains (DNS cannot list them; dnsmasq's nftset sees every name a
// client asks for). And a CDN answers each resolver differently (by its
// location, its address, at random), so the router may be told other
// addresses than the client that asks next: a name served by a CDN is
// steered reliably only by a set its clients' own resolver fills.
//
// Why not the standard library's resolver: it does not give the TTL.
// github.com/miekg/dns asks the servers of /etc/resolv.conf directly and
// gives every record's TTL.
package resolve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/miekg/dns"

	"flowpin/lb/config"
)

// Refresh bounds: a name is looked up again at its TTL, but not sooner
// than MinRefresh (a TTL of 0 or 5 s would be a query loop) nor later
// than MaxRefresh. A failed lookup is tried again after MinRefresh.
const (
	MinRefresh = 30 * time.Second
	MaxRefresh = time.Hour
)

// Set is a domain set to fill.
type Set struct {
	Name    string
	Domains []string
	// Timeout is how long an added address stays unless looked up
	// again: the set's timeout.
	Timeout time.Duration
}

// Resolver looks a name up: its addresses and the smallest TTL of the
// answer.
type Resolver interface {
	Lookup(ctx context.Context, name string) ([]netip.Addr, time.Duration, error)
}

// Writer adds addresses to a set (by its config name), with a timeout.
type Writer interface {
	AddToSet(name string, addrs []netip.Addr, timeout time.Duration) error
}

// Clock is the time Run schedules by (time.Now and time.After).
type Clock struct {
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
var RealClock = Clock{Now: time.Now, After: time.After}

// Run resolves the sets' names until ctx ends: each name on a schedule
// of its own.
func Run(ctx context.Context, sets []Set, r Resolver, w Writer, log *slog.Logger, clk Clock) {
	now := clk.Now
	type entry struct {
		set  int
		name string
		due  time.Time
	}
	var es []entry
	for i, s := range sets {
		for _, d := range s.Domains {
			es = append(es, entry{set: i, name: d, due: now()})
		}
	}
	if len(es) == 0 {
		return
	}
	for {
		slices.SortFunc(es, func(a, b entry) int { return a.due.Compare(b.due) })
		wait := es[0].due.Sub(now())
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-clk.After(wait):
			}
		}
		if ctx.Err() != nil {
			return
		}
		e := &es[0]
		e.due = now().Add(Once(ctx, sets[e.set], e.name, r, w, log))
	}
}

// Once looks name up for set s, adds what it finds, and returns when to
// look it up again.
func Once(ctx context.Context, s Set, name string, r Resolver, w Writer, log *slog.Logger) time.Duration {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, ttl, err := r.Lookup(qctx, name)
	if err != nil {
		log.Warn("resolve for a domain set", "set", s.Name, "name", name, "err", err)
		return MinRefresh
	}
	if len(addrs) > 0 {
		if err := w.AddToSet(s.Name, addrs, s.Timeout); err != nil {
			log.Warn("add resolved addresses to a domain set", "set", s.Name, "name", name, "err", err)
			return MinRefresh
		}
	}
	return min(max(ttl, MinRefresh), MaxRefresh)
}

// DNS asks the servers of a resolv.conf, in order, for A and AAAA.
type DNS struct {
	Servers []string // host:port
	Client  *dns.Client
}

// FromResolvConf reads the servers of path (/etc/resolv.conf).
func FromResolvConf(path string) (*DNS, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	d := &DNS{Client: &dns.Client{Timeout: 3 * time.Second}}
	for _, s := range cc.Servers {
		d.Servers = append(d.Servers, net.JoinHostPort(s, cc.Port))
	}
	if len(d.Servers) == 0 {
		return nil, fmt.Errorf("resolver: no nameserver in %s", path)
	}
	return d, nil
}

// Lookup asks for name's A and AAAA records; the TTL is the smallest of
// the answers' records (a CNAME's too). One family's failure does not
// lose the other's addresses (a server may refuse AAAA).
func (d *DNS) Lookup(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	var out []netip.Addr
	var failed error
	ttl := time.Duration(-1)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qt)
		var r *dns.Msg
		var err error
		for _, srv := range d.Servers {
			if r, _, err = d.Client.ExchangeContext(ctx, m, srv); err == nil {
				break
			}
		}
		if err != nil {
			failed = err
			continue
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			failed = fmt.Errorf("%s %s: %s", name, dns.TypeToString[qt], dns.RcodeToString[r.Rcode])
			continue
		}
		for _, rr := range r.Answer {
			var a netip.Addr
			switch v := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(v.A.To4())
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(v.AAAA)
			}
			if t := time.Duration(rr.Header().Ttl) * time.Second; ttl < 0 || t < ttl {
				ttl = t
			}
			if a.IsValid() && !slices.Contains(out, a.Unmap()) {
				out = append(out, a.Unmap())
			}
		}
	}
	if len(out) == 0 && failed != nil {
		return nil, 0, failed
	}
	if ttl < 0 {
		ttl = MinRefresh
	}
	return out, ttl, nil
}

// SetsOf are the config's domain sets with resolve: true.
func SetsOf(c *config.Config) []Set {
	var out []Set
	for _, s := range c.Sets {
		if s.Domain() && s.Resolve {
			out = append(out, Set{Name: s.Name, Domains: s.Domains, Timeout: s.Timeout})
		}
	}
	return out
}
