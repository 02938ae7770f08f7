package integration

import (
	"regexp"
	"strconv"
	"testing"
)

// checkDemoPrefixes6 checks the demo's prefixes6 section: the control
// loses flows, each prefix then arrives untranslated, isp1's prefix
// arrives translated during the outage and as itself after it.
func checkDemoPrefixes6(t *testing.T, sec string) {
	t.Helper()
	re := regexp.MustCompile(`from (\S+): (\d+)/(\d+) connections ok; seen at far as \S+ (\d+), as \S+ (\d+), other (\d+)`)
	type line struct {
		from                string
		ok, n, h1, h2, othr int
	}
	var got []line
	for _, m := range re.FindAllStringSubmatch(sec, -1) {
		l := line{from: m[1]}
		for i, p := range []*int{&l.ok, &l.n, &l.h1, &l.h2, &l.othr} {
			*p, _ = strconv.Atoi(m[i+2])
		}
		got = append(got, l)
	}
	if len(got) != 6 {
		t.Fatalf("prefixes6 demo: %d traffic lines, want 6: %+v", len(got), got)
	}
	if got[0].ok+got[1].ok > 35 {
		t.Errorf("prefixes6 demo, control: %d of 40 got through a dual default route; want a large share lost", got[0].ok+got[1].ok)
	}
	want := []line{
		{"2001:db8:1:100::2", 20, 20, 20, 0, 0}, // own prefix, own ISP
		{"2001:db8:2:100::2", 20, 20, 0, 20, 0},
		{"2001:db8:1:100::2", 20, 20, 0, 20, 0}, // isp1 down: translated
		{"2001:db8:1:100::2", 20, 20, 20, 0, 0}, // isp1 back
	}
	for i, w := range want {
		if got[i+2] != w {
			t.Errorf("prefixes6 demo, traffic line %d: %+v, want %+v", i+3, got[i+2], w)
		}
	}
	for _, s := range []string{
		"prefixes6 of isp1: 2001:db8:1:100::/56 (isp1, down: translated to 2001:db8:2:100::/56 on isp2)",
		"prefixes6 of isp2: 2001:db8:2:100::/56 (isp2, own link, untranslated)",
		"=> leaves by wan2 via 2001:db8:2::1 (link isp2) with source 2001:db8:2:100::2",
	} {
		if !regexp.MustCompile(regexp.QuoteMeta(s)).MatchString(sec) {
			t.Errorf("prefixes6 demo: no %q", s)
		}
	}
}
