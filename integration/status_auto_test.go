package integration

import (
	"regexp"
	"strings"
	"testing"
)

// A "gateway: auto" link whose interface has no default route yet shows
// as such, not as "invalid IP"; once the route exists and is applied, its
// gateway shows.
func TestStatusGatewayAutoNone(t *testing.T) {
	skipShort(t)
	d := newDualWAN(t)
	cfg := writeFile(t, "auto.yaml", strings.Replace(d.config(1, 1), "gateway: "+d.GW2, "gateway: auto", 1))
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := flowpin(t, d.Router, "status", "-c", cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^isp2 +wan2 +auto \(none yet\) `).MatchString(out) || strings.Contains(out, "invalid") {
		t.Errorf("no gateway yet:\n%s", out)
	}
	run(t, d.Router, "ip", "route", "add", "default", "via", d.GW2, "dev", "wan2", "metric", "200")
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err = flowpin(t, d.Router, "status", "-c", cfg)
	if err != nil || !regexp.MustCompile(`(?m)^isp2 +wan2 +`+regexp.QuoteMeta(d.GW2)+` \(auto\) `).MatchString(out) {
		t.Errorf("gateway found: %v\n%s", err, out)
	}
}
