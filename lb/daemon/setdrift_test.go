package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config"
)

// A file set's elements are compared with the kernel's when the daemon
// starts, when it lost notifications, and when a notification names the
// set; a domain set's element changes (a resolver's) are no reason to
// sync, and a sync for anything else lists no set.
func TestFileSetElementsChecked(t *testing.T) {
	h := newHarness(t)
	h.c.Sets = []config.Set{
		{Name: "video", Domains: []string{"video.example"}, Timeout: time.Hour},
		{Name: "office", Elems: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
	}
	h.start()
	h.waitTranscript(both)
	all := []string{"set4_office", "set6_office"}
	rechecks := func(step string, want ...[]string) {
		t.Helper()
		h.k.mu.Lock()
		got := slices.Clone(h.k.rechecks)
		h.k.mu.Unlock()
		if !slices.EqualFunc(got, want, func(a, b []string) bool { return slices.Equal(a, b) }) {
			t.Errorf("%s: the syncs checked %q, want %q", step, got, want)
		}
	}
	rechecks("start", all)

	h.events.send(Event{Kind: EventDrift, What: "elements of set set4_video changed", Set: "set4_video"})
	h.advanceSync()
	time.Sleep(20 * time.Millisecond)
	h.waitTranscript(both)

	h.events.send(Event{Kind: EventDrift, What: "elements of set set6_office changed", Set: "set6_office"})
	h.advanceSync()
	h.waitTranscript(both, both)
	rechecks("a file set's elements changed", all, []string{"set6_office"})

	h.events.send(Event{Kind: EventDrift, What: "route change"})
	h.advanceSync()
	h.waitTranscript(both, both, both)
	rechecks("a route changed", all, []string{"set6_office"}, []string{})

	h.events.lose("nftables")
	h.eventually("a sync after the lost notifications", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return len(h.k.rechecks) >= 4
	})
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	// The sync of "subscribed again" may follow: it checks nothing more.
	if got := h.k.rechecks[3]; !slices.Equal(got, all) {
		t.Errorf("lost notifications: the sync checked %q, want %q", got, all)
	}
}

// countingSets is the kernel's set counter, counting what it is asked.
type countingSets struct {
	mu     sync.Mutex
	counts map[string]int
	asked  [][]string
}

func (c *countingSets) SetCounts(names []string) (map[string]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, slices.Clone(names))
	out := map[string]int{}
	for _, n := range names {
		if v, ok := c.counts[n]; ok {
			out[n] = v
		}
	}
	return out, nil
}

// A scrape counts a file set from what the daemon wrote, never listing
// it (100k ranges are a tenth of a second or more of the kernel's
// time); a domain set's elements, a resolver's, are asked of the kernel
// at most every SetCountAge.
func TestSetMetricsListNoFileSet(t *testing.T) {
	h := newHarness(t)
	h.c.Sets = []config.Set{
		{Name: "video", Domains: []string{"video.example"}, Timeout: time.Hour},
		{Name: "office", Elems: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/25"), netip.MustParsePrefix("192.0.2.128/25"), netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8::/48")}},
	}
	h.start()
	h.waitTranscript(both)
	kernel := &countingSets{counts: map[string]int{"set4_video": 3, "set6_video": 1, "set4_office": 99, "set6_office": 99}}
	if err := h.d.Metrics().RegisterSetMetrics(h.c, h.d.SetCounter(kernel)); err != nil {
		t.Fatal(err)
	}
	want := `# HELP flowpin_set_elements Elements of the named set in the family's nft set: addresses of a domain set, merged ranges of a file set.
# TYPE flowpin_set_elements gauge
flowpin_set_elements{family="ipv4",kind="domains",set="video"} 3
flowpin_set_elements{family="ipv4",kind="file",set="office"} 2
flowpin_set_elements{family="ipv6",kind="domains",set="video"} 1
flowpin_set_elements{family="ipv6",kind="file",set="office"} 1
`
	for range 3 {
		if err := testutil.GatherAndCompare(h.d.Metrics().Registry, strings.NewReader(want), "flowpin_set_elements"); err != nil {
			t.Error(err)
		}
	}
	h.clock.Advance(SetCountAge)
	if err := testutil.GatherAndCompare(h.d.Metrics().Registry, strings.NewReader(want), "flowpin_set_elements"); err != nil {
		t.Error(err)
	}
	kernel.mu.Lock()
	defer kernel.mu.Unlock()
	domains := []string{"set4_video", "set6_video"}
	if len(kernel.asked) != 2 || !slices.Equal(kernel.asked[0], domains) || !slices.Equal(kernel.asked[1], domains) {
		t.Errorf("4 scrapes, the last after %v, asked the kernel for %q; want the domain set's counts twice", SetCountAge, kernel.asked)
	}
}
