package plan

import (
	"fmt"
	"net/netip"
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
