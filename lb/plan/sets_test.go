package plan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
)

// Overlapping and adjacent prefixes of both families are merged into the
// fewest ranges; a domain set has a timeout and no elements.
func TestNamedSetsMerged(t *testing.T) {
	c := &config.Config{Sets: []config.Set{
		{Name: "v", Domains: []string{"v.example"}, Timeout: 2 * time.Hour},
		{Name: "office", Elems: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/25"), netip.MustParsePrefix("10.0.0.128/25"), netip.MustParsePrefix("10.0.0.7/32"),
			netip.MustParsePrefix("2001:db8::/33"), netip.MustParsePrefix("2001:db8:8000::/33"), netip.MustParsePrefix("192.0.2.1/32"),
			netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("10.0.3.0/24"),
		}},
	}}
	got := namedSets(c)
	if len(got) != 2 || got[0].Timeout != 2*time.Hour || got[0].Ranges != nil || got[1].Timeout != 0 {
		t.Fatalf("%+v", got)
	}
	if s, want := fmt.Sprint(got[1].Ranges), "[10.0.0.0-10.0.1.255 10.0.3.0-10.0.3.255 192.0.2.1-192.0.2.1 2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]"; s != want {
		t.Errorf("ranges %s, want %s", s, want)
	}
}

func TestDnsmasqLines(t *testing.T) {
	c := &config.Config{Path: "/etc/flowpin/flowpin.yaml", Sets: []config.Set{
		{Name: "video", Domains: []string{"video.example", "cdn.example"}, Timeout: time.Hour},
		{Name: "office", Elems: []netip.Prefix{}},
		{Name: "bank-eu", Domains: []string{"bank.example"}, Timeout: time.Hour, Resolve: true},
	}}
	got := DnsmasqLines(c)
	want := []string{
		"# set video",
		"nftset=/video.example/cdn.example/4#inet#flowpin#set4_video,6#inet#flowpin#set6_video",
		"# set bank-eu",
		"nftset=/bank.example/4#inet#flowpin#set4_bank-eu,6#inet#flowpin#set6_bank-eu",
	}
	if fmt.Sprint(got[2:]) != fmt.Sprint(want) {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A rule with a set matches by what the kernel's set holds; without
// knowing it, the answer is flagged unsure.
func TestMatchSets(t *testing.T) {
	rs := []config.Rule{
		{Name: "video", DstSet: "video"},
		{Name: "office", SrcSet: "office", Proto: config.TCP},
	}
	in := map[string]string{"video": "203.0.113.20", "office": "10.0.0.7"}
	inSet := func(set string, a netip.Addr) bool { return in[set] == a.String() }
	for _, tc := range []struct {
		f      Flow
		want   int
		unsure bool
	}{
		{Flow{Dst: netip.MustParseAddr("203.0.113.20"), InSet: inSet}, 0, false},
		{Flow{Dst: netip.MustParseAddr("203.0.113.21"), Src: netip.MustParseAddr("10.0.0.7"), Proto: 6, InSet: inSet}, 1, false},
		{Flow{Dst: netip.MustParseAddr("203.0.113.21"), Src: netip.MustParseAddr("10.0.0.8"), Proto: 6, InSet: inSet}, -1, false},
		{Flow{Dst: netip.MustParseAddr("203.0.113.21"), Proto: 6, InSet: inSet}, -1, true},
		{Flow{Dst: netip.MustParseAddr("203.0.113.20")}, -1, true},
	} {
		i, unsure := Match(rs, tc.f)
		if i != tc.want || (unsure != "") != tc.unsure {
			t.Errorf("%+v: rule %d (%q), want %d", tc.f, i, unsure, tc.want)
		}
	}
}

// A config path with a line break (odd, but a valid file name) stays in
// the comment: the output is read by dnsmasq as config, where a second
// line would be a directive of its own.
func TestDnsmasqLinesOddPath(t *testing.T) {
	c := &config.Config{Path: "/tmp/x\nserver=/bank.example/203.0.113.66\n/f.yaml", Sets: []config.Set{
		{Name: "video", Domains: []string{"video.example"}, Timeout: time.Hour},
	}}
	for _, l := range DnsmasqLines(c) {
		if strings.Contains(l, "\n") || strings.Contains(l, "\r") {
			t.Errorf("line %q holds a line break", l)
		}
	}
}

// dnsmasq 2.90 refuses a config line longer than 1024 characters ("bad
// option"), and then does not start at all: the LAN's DNS is down. A set
// with many domains (up to 1024 of 253 characters) is split over several
// nftset= lines of the same sets, each within that.
func TestDnsmasqLinesLong(t *testing.T) {
	var ds []string
	for i := range 300 {
		ds = append(ds, fmt.Sprintf("name%d.%s.example", i, strings.Repeat("x", 40)))
	}
	ds = append(ds, strings.Repeat("a", 63)+"."+strings.Repeat("b", 63)+"."+strings.Repeat("c", 63)+"."+strings.Repeat("d", 61))
	name := strings.Repeat("v", config.MaxSetName)
	c := &config.Config{Path: "/etc/flowpin/flowpin.yaml", Sets: []config.Set{{Name: name, Domains: ds, Timeout: time.Hour}}}
	seen := map[string]int{}
	tail := "/4#inet#flowpin#set4_" + name + ",6#inet#flowpin#set6_" + name
	for _, l := range DnsmasqLines(c) {
		if len(l) > 1024 {
			t.Errorf("a line of %d characters: %.60s...", len(l), l)
		}
		if !strings.HasPrefix(l, "nftset=/") {
			continue
		}
		if !strings.HasSuffix(l, tail) {
			t.Errorf("line %.60s... does not end with the sets", l)
			continue
		}
		for _, d := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "nftset=/"), tail), "/") {
			seen[d]++
		}
	}
	for _, d := range ds {
		if seen[d] != 1 {
			t.Errorf("%s in %d lines, want 1", d, seen[d])
		}
	}
	if len(seen) != len(ds) {
		t.Errorf("%d names in the lines, want %d", len(seen), len(ds))
	}
}
