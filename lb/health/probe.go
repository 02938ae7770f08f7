package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"flowpin/lb/config"
)

// linkControl makes a socket leave by one link whatever the routing
// says: SO_BINDTODEVICE ties it to the link's device, and SO_MARK gives
// its packets the link's mark, so the fwmark rule routes them by the
// link's own table and the nft rules see them as the link's. It is the
// Control of the ICMP socket and of every dialer of the other methods.
func linkControl(iface string, mark uint32) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.BindToDevice(int(fd), iface); serr != nil {
				serr = fmt.Errorf("bind to %s: %w", iface, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
				serr = fmt.Errorf("set mark: %w", serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// ConnProber probes by connecting: tcp (a connection to the port), http
// (GET, status below 400) or dns (a query answered NOERROR or NXDOMAIN).
// Every probe is a fresh socket that leaves by the link (linkControl),
// so it holds nothing open between rounds.
type ConnProber struct {
	check config.HealthCheck
	iface string
	// control is every socket's Control: linkControl for the link.
	control func(network, address string, rc syscall.RawConn) error
}

// NewConnProber prepares probes of c.Method out of iface with mark. It
// opens nothing yet: a missing device shows in the rounds.
func NewConnProber(c config.HealthCheck, iface string, mark uint32) (*ConnProber, error) {
	switch c.Method {
	case config.ProbeTCP, config.ProbeHTTP, config.ProbeDNS:
	default:
		return nil, fmt.Errorf("probe method %q does not connect", c.Method)
	}
	if c.Port == 0 {
		return nil, fmt.Errorf("probe method %s: no port", c.Method)
	}
	return &ConnProber{check: c, iface: iface, control: linkControl(iface, mark)}, nil
}

// Close releases nothing: probes hold no socket between rounds.
func (p *ConnProber) Close() {}

// Probe probes every target in parallel; each probe ends by timeout.
func (p *ConnProber) Probe(targets []netip.Addr, timeout time.Duration) Round {
	results := make(chan probeResult, len(targets))
	for _, tgt := range targets {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			rtt, err := p.once(ctx, tgt)
			results <- probeResult{tgt, rtt, err}
		}()
	}
	return collectRound(len(targets), results)
}

// probeResult is one target's outcome in a round: an answer after rtt, or
// the error that stands for its loss.
type probeResult struct {
	target netip.Addr
	rtt    time.Duration
	err    error
}

// collectRound gathers the results of a round of n probes: the answered
// ones' median rtt, the lost targets, and the first loss that says more
// than a timeout.
func collectRound(n int, results <-chan probeResult) Round {
	r := Round{Sent: n}
	var rtts []time.Duration
	for range n {
		res := <-results
		if res.err == nil {
			rtts = append(rtts, res.rtt)
			continue
		}
		r.Lost = append(r.Lost, res.target)
		if c := cause(res.err); c != "" && r.Cause == "" {
			r.Cause = c
		}
	}
	r.Answered, r.RTT = len(rtts), Median(rtts)
	return r
}

// once probes one target; nil is an answer, in rtt.
func (p *ConnProber) once(ctx context.Context, tgt netip.Addr) (time.Duration, error) {
	d := &net.Dialer{Control: p.control}
	dialTo := tgt
	if tgt.Is6() && tgt.IsLinkLocalUnicast() {
		dialTo = tgt.WithZone(p.iface) // a link-local target is on this link
	}
	addr := netip.AddrPortFrom(dialTo, uint16(p.check.Port)).String()
	switch p.check.Method {
	case config.ProbeTCP:
		start := time.Now()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, err
		}
		rtt := time.Since(start)
		// Reset rather than close: no TIME_WAIT socket and no conntrack
		// entry left in TIME_WAIT for two minutes per probe.
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
		return rtt, nil
	case config.ProbeHTTP:
		return p.http(ctx, d, tgt, addr)
	case config.ProbeDNS:
		return p.dns(ctx, d, addr)
	}
	return 0, fmt.Errorf("probe method %q", p.check.Method)
}

// http sends GET http://TARGET[:PORT]/URL, the Host header the target's
// address, and takes a status below 400 as an answer. Redirects are not
// followed: a 3xx is the server answering.
func (p *ConnProber) http(ctx context.Context, d *net.Dialer, tgt netip.Addr, addr string) (time.Duration, error) {
	host := tgt.WithZone("").String()
	if tgt.Is6() {
		host = "[" + host + "]"
	}
	if p.check.Port != config.DefaultHTTPPort {
		host += ":" + strconv.Itoa(p.check.Port)
	}
	// The config checked it is an origin-form path.
	u, err := url.ParseRequestURI(p.check.URL)
	if err != nil {
		return 0, err
	}
	u.Scheme, u.Host = "http", host
	client := &http.Client{
		Transport: &http.Transport{
			// The target's own address, zone included, whatever the URL.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
			// No proxy: the probe is about this link's path to the target.
			Proxy: nil,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "flowpin-probe")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return 0, fmt.Errorf("http status %d", resp.StatusCode)
	}
	return rtt, nil
}

// dns asks for the A record of the query name. NOERROR and NXDOMAIN are
// answers: the server works, whatever the name holds. SERVFAIL, REFUSED
// and the like are not: the resolver behind the link is broken.
func (p *ConnProber) dns(ctx context.Context, d *net.Dialer, addr string) (time.Duration, error) {
	c := &dns.Client{Net: "udp", Dialer: d}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(p.check.Query), dns.TypeA)
	in, rtt, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return 0, err
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return 0, fmt.Errorf("dns %s", dns.RcodeToString[in.Rcode])
	}
	return rtt, nil
}

// cause is what a reason says of a failed probe: the errno ("connection
// refused"), the server's answer ("http status 503"), or nothing for a
// timeout, which "lost" already says.
func cause(err error) string {
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ""
	case errors.As(err, &errno):
		return errno.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
