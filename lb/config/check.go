package config

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ProbeMethod is how a link's targets are probed.
type ProbeMethod string

const (
	// ProbeICMP: an echo request; the target's kernel answers.
	ProbeICMP ProbeMethod = "icmp"
	// ProbeTCP: a TCP connection to the port, closed at once.
	ProbeTCP ProbeMethod = "tcp"
	// ProbeHTTP: GET http://TARGET:PORT/URL; an answer is a status below
	// 400.
	ProbeHTTP ProbeMethod = "http"
	// ProbeDNS: a query for Query; an answer is NOERROR or NXDOMAIN (the
	// server works; what the name holds does not matter).
	ProbeDNS ProbeMethod = "dns"
)

// Limits of the quality settings.
const (
	MaxWindow   = 100
	MaxHoldDown = time.Hour
	// DefaultHTTPPort and DefaultDNSPort are the methods' ports when the
	// config gives none; tcp has no default.
	DefaultHTTPPort = 80
	DefaultDNSPort  = 53
)

// fillQuality takes max_rtt, max_loss, window and hold_down. It runs after
// the timeout is known.
func (c *Config) fillQuality(i int, raw *rawCheck, out *HealthCheck) error {
	if raw.MaxRTT != nil {
		v := *raw.MaxRTT
		if v < time.Millisecond {
			return c.LinkError(i, "check.max_rtt", "%v is too small (at least 1ms)", v)
		}
		// A probe answered after the timeout is lost, not slow: a limit
		// at or above it could never be exceeded.
		if v >= out.Timeout {
			return c.LinkError(i, "check.max_rtt", "%v is not below the timeout (%v): a later answer is already lost; give a smaller max_rtt, or a longer interval and timeout", v, out.Timeout)
		}
		out.MaxRTT = v
	}
	if raw.MaxLoss != nil {
		v, err := parsePercent(*raw.MaxLoss)
		if err != "" {
			return c.LinkError(i, "check.max_loss", "%s %s", quote(*raw.MaxLoss), err)
		}
		out.MaxLoss = v
	}
	if raw.Window != nil {
		if v := *raw.Window; v < 1 || v > MaxWindow {
			return c.LinkError(i, "check.window", "%d is out of range (1..%d rounds)", v, MaxWindow)
		}
		out.Window = int(*raw.Window)
	}
	if raw.HoldDown != nil {
		if v := *raw.HoldDown; v < 0 || v > MaxHoldDown {
			return c.LinkError(i, "check.hold_down", "%v is out of range (0s..%v)", v, MaxHoldDown)
		}
		out.HoldDown = *raw.HoldDown
	}
	return nil
}

// parsePercent reads "20%" as 0.2. The error reads after the quoted
// value.
func parsePercent(s string) (float64, string) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || err != nil {
		return 0, "is not a percentage like 20%"
	}
	if !(f > 0 && f < 100) {
		return 0, "is out of range (more than 0% and less than 100%)"
	}
	return f / 100, ""
}

// fillMethod takes method and the keys that belong to it.
func (c *Config) fillMethod(i int, raw *rawCheck, out *HealthCheck) error {
	if raw.Method != nil {
		switch m := ProbeMethod(*raw.Method); m {
		case ProbeICMP, ProbeTCP, ProbeHTTP, ProbeDNS, ProbeExec, ProbeARP:
			out.Method = m
		default:
			return c.LinkError(i, "check.method", "%s is not a probe method (icmp, tcp, http, dns, exec or arp)", quote(*raw.Method))
		}
	}
	m := out.Method
	if err := c.fillExecARP(i, raw, out); err != nil {
		return err
	}
	if raw.Port != nil {
		if m != ProbeTCP && m != ProbeHTTP && m != ProbeDNS {
			return c.LinkError(i, "check.port", "%d: a port is for the tcp, http and dns methods, and this check uses %s", *raw.Port, m)
		}
		if v := *raw.Port; v < 1 || v > 65535 {
			return c.LinkError(i, "check.port", "%d is out of range (1..65535)", v)
		}
		out.Port = int(*raw.Port)
	}
	switch {
	case out.Port != 0:
	case m == ProbeTCP:
		return c.LinkError(i, "check.port", "missing: method tcp connects to a port (port: 443, say)")
	case m == ProbeHTTP:
		out.Port = DefaultHTTPPort
	case m == ProbeDNS:
		out.Port = DefaultDNSPort
	}
	if raw.URL != nil {
		if m != ProbeHTTP {
			return c.LinkError(i, "check.url", "%s: a url is for the http method, and this check uses %s", quote(*raw.URL), m)
		}
		if !validPath(*raw.URL) {
			return c.LinkError(i, "check.url", "%s is not a path (like / or /health?full=1): the host is the target", quote(*raw.URL))
		}
		out.URL = *raw.URL
	} else if m == ProbeHTTP {
		out.URL = "/"
	}
	if raw.Query != nil {
		if m != ProbeDNS {
			return c.LinkError(i, "check.query", "%s: a query is for the dns method, and this check uses %s", quote(*raw.Query), m)
		}
		if !validDomain(*raw.Query) {
			return c.LinkError(i, "check.query", "%s is not a domain name", quote(*raw.Query))
		}
		out.Query = *raw.Query
	} else if m == ProbeDNS {
		return c.LinkError(i, "check.query", "missing: method dns needs a name to ask for (query: example.com, say)")
	}
	return nil
}

// validPath: an origin-form request target (RFC 9112 section 3.2.1), at
// most 1 KiB, printable ASCII.
func validPath(s string) bool {
	if !strings.HasPrefix(s, "/") || len(s) > 1024 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return false
		}
	}
	u, err := url.ParseRequestURI(s)
	return err == nil && u.Host == "" && u.Scheme == "" && u.Fragment == ""
}

// validDomain: labels of 1..63 letters, digits, '-' or '_' (service
// names like _dmarc use it), at most 253 bytes; a final dot is allowed.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			ok := r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
			if !ok {
				return false
			}
		}
	}
	return true
}
