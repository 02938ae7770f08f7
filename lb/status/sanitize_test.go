package status

import (
	"bytes"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"flowpin/lb/health"
	"flowpin/rules"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"isp1":                  "isp1",
		"down: 3/3 probes lost": "down: 3/3 probes lost",
		"\x1b[2J":               `\x1b[2J`,
		"a\tb\nc\rd":            `a\x09b\x0ac\x0dd`,
		"del\x7f":               `del\x7f`,
		"c1 \u009b2J":           `c1 \x9b2J`,
		"bidi \u202eevil":       `bidi \u202eevil`,
		"not utf-8 \xff":        `not utf-8 \xff`,
		`forged \x1b`:           `forged \\x1b`,
		"ümlaut 日本":             "ümlaut 日本",
		"":                      "",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// The daemon's answer (link names, states, reasons, warnings) and flow
// fields reach the terminal escaped.
func TestStatusWriteEscapes(t *testing.T) {
	c := statusConfig(t, statusLinks)
	s := BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
	s.WithHealth([]health.LinkHealth{
		{Name: "isp1", State: "up\x1b]0;owned\x07", Reason: "probes ok\x1b[2J", LastChange: time.Unix(0, 0)},
	})
	s.Links[1].Name = "isp2\x1b[31m"
	s.Warnings = append(s.Warnings, "from the daemon\x1b[2J")
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	fl := &FlowList{Matched: 1, Flows: []FlowRow{{Proto: "tcp\x1b[2J", Src: "10.0.0.1:1", Dst: "x\x1b", Link: "isp1\x9b"}}}
	if err := WriteFlows(&buf, fl); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	if strings.ContainsAny(got, "\x1b\x07") || strings.Contains(got, "\x9b") || strings.Contains(got, "\u009b") {
		t.Errorf("raw control characters reach the terminal:\n%q", got)
	}
	for _, want := range []string{`probes ok\x1b[2J`, `isp2\x1b[31m`, `up\x1b]0;owned\x07`, `warning: from the daemon\x1b[2J`, `tcp\x1b[2J`, `isp1\x9b`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// A "gateway: auto" link shows the gateway found in its table, or that
// there is none yet; never "invalid IP".
func TestStatusGatewayAuto(t *testing.T) {
	c := statusConfig(t, strings.Replace(statusLinks, "gateway: 198.51.100.1", "gateway: auto", 1))
	a := statusApplied(c)
	s := BuildStatus(c, a, Tally{}, time.Unix(0, 0))
	if l := s.Links[1]; l.Gateway != "" || !l.GatewayAuto {
		t.Errorf("no route yet: gateway %q auto %v, want \"\" true", l.Gateway, l.GatewayAuto)
	}
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !regexp.MustCompile(`wan2 +auto \(none yet\) +1 `).MatchString(got) || strings.Contains(got, "invalid") {
		t.Errorf("no gateway yet:\n%s", got)
	}

	a.Routes = append(a.Routes, rules.Route{Family: rules.V4, Table: c.Links[1].Table, Dst: statusAll4, Gw: netip.MustParseAddr("198.51.100.254"), Dev: "wan2"})
	s = BuildStatus(c, a, Tally{}, time.Unix(0, 0))
	if l := s.Links[1]; l.Gateway != "198.51.100.254" {
		t.Errorf("gateway %q, want the one in table %d", l.Gateway, c.Links[1].Table)
	}
	buf.Reset()
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !strings.Contains(got, "198.51.100.254 (auto)") {
		t.Errorf("gateway found:\n%s", got)
	}
	if l := s.Links[0]; l.GatewayAuto || l.Gateway != "192.0.2.1" {
		t.Errorf("fixed gateway: %+v", l)
	}
}

// A point-to-point link's table has `default dev IF` and no next hop:
// status names the device, not "none yet".
func TestStatusGatewayAutoPointToPoint(t *testing.T) {
	c := statusConfig(t, strings.Replace(statusLinks, "gateway: 198.51.100.1", "gateway: auto", 1))
	a := statusApplied(c)
	a.Routes = append(a.Routes, rules.Route{Family: rules.V4, Table: c.Links[1].Table, Dst: statusAll4, Dev: "wan2", Src: netip.MustParseAddr("100.64.0.2")})
	s := BuildStatus(c, a, Tally{}, time.Unix(0, 0))
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !strings.Contains(got, "dev wan2 (auto)") {
		t.Errorf("device-only default route:\n%s", got)
	}
}
