package daemon

import (
	"slices"
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
)

// keptOpen is why flows stay when every link is judged down.
const keptOpen = "no other IPv4 link is up to take them (every IPv4 link is judged down, and all stay in the route)"

// keptOf is what the daemon says of a link's kept flows ("": none kept).
func (h *harness) keptOf(link string) string {
	return h.state(link).FlowsKept
}

// The probe target stops answering: every link is judged down, though
// they all still carry traffic. The route fails open (both links stay in
// it), not one flow is deleted, status says why, and when the target
// answers again the links come back and nothing was deleted. The links do
// not fail in the same round: the first one down waits while the other's
// probes fail too.
func TestEveryLinkDownKeepsFlows(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)

	h.probers.set("wan1", false)
	h.round()
	h.probers.set("wan2", false)
	h.round()
	h.round()
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, "apply route=[isp2] out=[isp1]")
	h.eventually("isp1's flows kept while isp2 fails too", func() bool {
		return h.keptOf("isp1") == "the other IPv4 links' probes fail too"
	})
	h.round()
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	// Every link down: the route fails open, both stay in it.
	h.waitTranscript(both, "apply route=[isp2] out=[isp1]", both)
	for _, l := range []string{"isp1", "isp2"} {
		h.eventually(l+"'s flows kept", func() bool { return h.keptOf(l) == keptOpen })
	}

	// The target answers again; isp1's rounds come first.
	h.probers.set("wan1", true)
	h.round()
	h.probers.set("wan2", true)
	h.round()
	h.waitState("isp1", health.StateUp)
	h.round()
	h.waitState("isp2", health.StateUp)
	for range 3 {
		h.round()
		h.advanceSync()
	}
	if tr := h.rec.get(); slices.ContainsFunc(tr, func(s string) bool { return strings.HasPrefix(s, "flush") }) {
		t.Fatalf("flows deleted:\n%s", strings.Join(tr, "\n"))
	}
	for _, l := range []string{"isp1", "isp2"} {
		if k := h.keptOf(l); k != "" {
			t.Errorf("%s up again, still says its flows are kept: %q", l, k)
		}
	}
}

// Flows kept while every link was down are deleted after all when their
// link keeps failing while another works again: failures of rounds that
// began after the other link was back.
func TestKeptFlowsGoWhenTheirLinkStaysDead(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.probers.set("wan1", false)
	h.probers.set("wan2", false)
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, both)
	h.eventually("isp2's flows kept", func() bool { return h.keptOf("isp2") == keptOpen })

	// isp1 comes back (rise 2); isp2's rounds of that time fail.
	h.probers.set("wan1", true)
	h.round()
	h.round()
	h.waitState("isp1", health.StateUp)
	h.advanceSync()
	h.waitTranscript(both, both, isp2Out)
	// isp2's next round, begun with isp1 up, fails too: now they go.
	h.round()
	h.waitTranscript(both, both, isp2Out, flush2)
	if k := h.keptOf("isp2"); k != "" {
		t.Errorf("isp2's flows deleted, status still says kept: %q", k)
	}
}

// A policy with no live link keeps its flows on a down link by its label,
// while the other flows of that link move to the live one; failback
// flushes a policy's flows only towards a live tier.
func TestKeepThePolicysFlowsWithNowhereToGo(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, checked+`policies:
  - {name: voip, tiers: [[isp2]], failback: flush}
rules:
  - {name: sip, proto: udp, dst_ports: [5060], policy: voip}
`)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	h.waitTranscript(both)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp2Out, "flush mark 0x200/0xff00 family 2 except labels [0]")
	h.eventually("voip's flows kept", func() bool {
		return h.keptOf("isp2") == "those of policy voip: none of its other links is up in IPv4"
	})
}

// A reload keeps what was decided: kept flows stay kept (and status says
// so) under the new daemon.
func TestReloadKeepsKeptFlows(t *testing.T) {
	h := newHarness(t)
	sup := NewSupervisor(Deps{Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events},
		func() (*config.Config, error) { return h.c, nil }, quietLog())
	first, stop := runSupervisor(t, sup, h.c)
	defer stop()
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	waitHealth(t, first, "isp2", health.StateDown)
	h.advanceSync()
	h.d = first
	h.eventually("kept", func() bool { return healthOf(first, "isp1").FlowsKept != "" && healthOf(first, "isp2").FlowsKept != "" })
	if err := sup.Reload(); err != nil {
		t.Fatal(err)
	}
	second := waitDaemon(t, sup, first)
	for _, l := range []string{"isp1", "isp2"} {
		if k := healthOf(second, l).FlowsKept; k != keptOpen {
			t.Errorf("%s after the reload: flows kept %q", l, k)
		}
	}
	if tr := h.rec.get(); slices.ContainsFunc(tr, func(s string) bool { return strings.HasPrefix(s, "flush") }) {
		t.Errorf("flows deleted:\n%s", strings.Join(tr, "\n"))
	}
}

// Failback flushes a policy's flows only towards a tier with a live link:
// not when every link is down and the route failed open (its first tier
// is in the route then, but not up), and then once that tier's link is
// really back.
func TestNoFailbackWhileFailingOpen(t *testing.T) {
	h := newHarness(t)
	h.c.Policies = append(h.c.Policies, config.Policy{Name: "isp1-first", Tiers: [][]int{{0}, {1}}, LastResort: config.Unreachable, Failback: config.Flush})
	h.c.Rules = []config.Rule{{Name: "web", Policy: "isp1-first", Target: 1}}
	h.start()
	h.waitTranscript(both)
	isp1Out := "apply route=[isp2] out=[isp1]"
	h.probers.set("wan1", false)
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp1Out, "flush mark 0x100/0xff00")

	// isp2 goes too: the route fails open, isp1 is in it, but no tier is
	// live: the policy's flows on isp2 stay.
	h.probers.set("wan2", false)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Up: false})
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.waitTranscript(both, isp1Out, "flush mark 0x100/0xff00", both)

	// isp1 is back for real: now the policy fails back.
	h.probers.set("wan1", true)
	h.round()
	h.round()
	h.waitState("isp1", health.StateUp)
	h.advanceSync()
	h.waitTranscript(both, isp1Out, "flush mark 0x100/0xff00", both, isp2Out, "flush mark 0x200/0xff00 label 0 family 2")
}
