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
	yaml := "ha: true\n" + strings.NewReplacer(
		"gateway: 192.0.2.1\n", "gateway: 192.0.2.1\n    nat_source: 192.0.2.9\n",
		"gateway: 198.51.100.1\n", "gateway: 198.51.100.1\n    nat_source: 198.51.100.9\n",
	).Replace(checked)
	h.c = configtest.MustParse(t, yaml)
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
	h.clock.Advance(MinSyncInterval)
	h.waitTranscript(both, isp2Out, "flush unreplied mark 0x200/0xff00 family 2 except labels []")
	var left []uint32
	_ = h.k.ct.Walk(nil, ct.DetailCounters, func(r *ct.FlowRecord) { left = append(left, r.ID) })
	if want := []uint32{1, 3}; !slices.Equal(left, want) {
		t.Errorf("flows left %v, want %v", left, want)
	}
	h.eventually("status says isp2's answered flows are kept", func() bool { return h.keptOf("isp2") == haKeepReplied })
}
