package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

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
	h.clock.Advance(MinSyncInterval)
	time.Sleep(20 * time.Millisecond)
	h.waitTranscript(both)

	h.events.send(Event{Kind: EventDrift, What: "elements of set set6_office changed", Set: "set6_office"})
	h.clock.Advance(MinSyncInterval)
	h.waitTranscript(both, both)
	rechecks("a file set's elements changed", all, []string{"set6_office"})

	h.events.send(Event{Kind: EventDrift, What: "route change"})
	h.clock.Advance(MinSyncInterval)
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
