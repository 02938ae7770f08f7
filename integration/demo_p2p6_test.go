package integration

import (
	"regexp"
	"strings"
	"testing"
)

// checkDemoP2P6 checks the demo's IPv6 over the PPP-like link: the link's
// IPv6 table routes by the device alone, its leg of the IPv6 multipath
// route names the placeholder next hop, and new IPv6 connections spread
// over both links, none lost.
func checkDemoP2P6(t *testing.T, text string) {
	t.Helper()
	const heading = "==> IPv6 over the PPP-like link"
	i := strings.Index(text, heading)
	if i < 0 {
		t.Errorf("no section %q", heading)
		return
	}
	sec := text[i+len(heading):]
	if j := strings.Index(sec, "==> "); j >= 0 {
		sec = sec[:j]
	}
	for _, want := range []string{"default dev wan2 proto 201 src 2001:db8:2::2", "nexthop via fe80::1 dev wan2 weight 1"} {
		if !strings.Contains(sec, want) {
			t.Errorf("IPv6 over the PPP-like link: no %q in\n%s", want, sec)
		}
	}
	m := regexp.MustCompile(`(\d+)/40 connections ok; seen at far: isp1 \(2001:db8:1::2\) (\d+), isp2 \(2001:db8:2::2\) (\d+), other (\d+)`).FindStringSubmatch(sec)
	if m == nil || m[1] != "40" || m[2] == "0" || m[3] == "0" || m[4] != "0" {
		t.Errorf("IPv6 over the PPP-like link: %v; want 40 of 40, over both links, none from another address", m)
	}
}
