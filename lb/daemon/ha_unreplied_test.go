package daemon

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
	"flowpin/nft/ct"
	"flowpin/nft/ct/cttest"
)

// An HA node whose link dies silently, through the daemon's loop: once
// the link is out of the route, its connection attempts that never saw a
// reply are deleted (their SYN retransmits then go by isp1), and its
// answered flows stay, which status says.
func TestHADownLinkDeletesUnansweredAttempts(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, haChecked)
	h.k = newFakeKernel(h.rec, h.c)
	h.k.ct = &cttest.Fake{Flows: []ct.FlowRecord{
		{ID: 1, Family: unix.AF_INET, Mark: 0x200, SeenReply: true},
		{ID: 2, Family: unix.AF_INET, Mark: 0x200},
		{ID: 3, Family: unix.AF_INET, Mark: 0x100},
	}}
	h.probers = newFakeProbers(h.c)
	h.start()
	h.waitTranscript(both)

	h.probers.set("wan2", false)
	h.round()
	h.round()
	h.round()
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, "flush unreplied mark 0x200/0xff00 family 2 except labels []")
	var left []uint32
	_ = h.k.ct.Walk(nil, ct.DetailCounters, func(r *ct.FlowRecord) { left = append(left, r.ID) })
	if want := []uint32{1, 3}; !slices.Equal(left, want) {
		t.Errorf("flows left %v, want %v", left, want)
	}
	h.eventually("status says isp2's answered flows are kept", func() bool { return h.keptOf("isp2") == haKeepReplied })
}

// Every link of the backup down at once (its WAN switch gone): the route
// fails open, and not one flow is deleted, not even the unanswered ones,
// as no other link could take them.
func TestHABackupEveryLinkDownDeletesNothing(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, haChecked)
	h.k = newFakeKernel(h.rec, h.c)
	h.k.ct = &cttest.Fake{Flows: []ct.FlowRecord{{ID: 1, Family: unix.AF_INET, Mark: 0x100}, {ID: 2, Family: unix.AF_INET, Mark: 0x200}}}
	h.probers = newFakeProbers(h.c)
	h.start()
	h.waitTranscript(both)
	if r := h.d.Role(); r != "backup" {
		t.Fatalf("role %q, want backup", r)
	}
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.probers.set("wan1", false)
	h.probers.set("wan2", false)
	h.waitState("isp1", health.StateDown)
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	for _, l := range []string{"isp1", "isp2"} {
		h.eventually(l+"'s flows kept", func() bool { return h.keptOf(l) == keptOpen })
	}
	h.round()
	if tr := h.rec.get(); slices.ContainsFunc(tr, func(s string) bool { return strings.HasPrefix(s, "flush") }) {
		t.Errorf("flows deleted with every link down:\n%s", strings.Join(tr, "\n"))
	}
	n := 0
	_ = h.k.ct.Walk(nil, ct.DetailCounters, func(*ct.FlowRecord) { n++ })
	if n != 2 {
		t.Errorf("%d flows left, want 2", n)
	}
}
