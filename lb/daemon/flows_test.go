package daemon

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"flowpin/lb/status"
)

const v4, v6 = unix.AF_INET, unix.AF_INET6

// FlowTally serves flows per mark from memory and each link's traffic
// from its rules' counters, not from a dump.
func TestFlowTally(t *testing.T) {
	h := newHarness(t)
	h.flows = newFakeFlowTable()
	h.flows.Put(1, 0x100, v4)
	h.flows.Put(2, 0x100, v6)
	h.flows.Put(3, 0, v4)
	h.flows.Put(4, 0x700, v4)
	h.traffic = fakeTraffic{
		"prerouting restore isp1": {Packets: 10, Bytes: 1000},
		"output restore isp1":     {Packets: 1, Bytes: 100},
		"postrouting save isp1":   {Packets: 2, Bytes: 120},
		"prerouting from isp1":    {Packets: 9, Bytes: 9000},
		"prerouting save isp1":    {Packets: 1, Bytes: 60}, // part of "from"
	}
	walked, release := h.flows.HoldNextWalk()
	h.run()
	<-walked
	if _, err := h.d.FlowTally(); err != ErrCountsNotReady {
		t.Errorf("before the first count: %v, want ErrCountsNotReady", err)
	}
	release()
	<-h.ready
	h.eventually("counted", func() bool { _, ok := h.d.flows.Counts(); return ok })
	walks := h.flows.WalkCount()
	tally, err := h.d.FlowTally()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]status.Counters{}
	for m, c := range tally {
		got[m] = *c
	}
	want := map[uint32]status.Counters{
		0x100: {Flows: 2, FlowsIPv6: 1, BytesOut: 1220, PacketsOut: 13, BytesIn: 9000, PacketsIn: 9},
		0x200: {},
		0:     {Flows: 1},
		0x700: {Flows: 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("tally (-want +got):\n%s", d)
	}
	if h.flows.WalkCount() != walks {
		t.Error("FlowTally walked the table")
	}
}
