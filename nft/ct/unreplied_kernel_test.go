package ct

import (
	"slices"
	"testing"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// FlushUnreplied deletes one link's flows of one family that never saw a
// reply, and no answered flow, no other link's flow and no flow carrying
// a kept label bit; a walk reads SeenReply from the same status.
func TestFlushUnrepliedInNamespace(t *testing.T) {
	h, _ := namedNetns(t)
	const link, other, mask = 0x100, 0x200, 0xff00
	// Flow i: mark, answered.
	flows := []struct {
		mark    uint32
		replied bool
	}{{link, false}, {link, true}, {link, false}, {other, false}, {other, true}}
	var fls []conntrack.Flow
	for i, f := range flows {
		fl := fakeFlow(i, f.mark)
		if f.replied {
			// A flow made by ctnetlink is confirmed at once; a status
			// without that bit asks to change it (EBUSY).
			fl.Status = conntrack.StatusSeenReply | conntrack.StatusConfirmed
		}
		fls = append(fls, fl)
	}
	w, c := withFlows(t, h, fls)
	var replied []int
	if err := c.Walk(nil, DetailTuples, func(r *FlowRecord) {
		if r.SeenReply {
			replied = append(replied, int(r.OrigSrc.Port)-1024)
		}
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(replied)
	if !slices.Equal(replied, []int{1, 4}) {
		t.Errorf("walk: flows that saw a reply %v, want 1 4", replied)
	}
	// The kernel filters the dump by status: only the link's two
	// unanswered flows cross into user space.
	if got, err := w.DumpFilter(markFilter(link, mask, unix.AF_INET).Status(0).StatusMask(uint32(conntrack.StatusSeenReply)), nil); err != nil || len(got) != 2 {
		t.Errorf("dump filtered by status: %d flows, %v; want the 2 unanswered", len(got), err)
	}
	if n, err := c.FlushUnreplied(link, mask, unix.AF_INET6, nil); err != nil || n != 0 {
		t.Fatalf("IPv6: %d, %v; want none", n, err)
	}
	n, err := c.FlushUnreplied(link, mask, unix.AF_INET, nil)
	if err != nil || n != 2 {
		t.Fatalf("FlushUnreplied: %d, %v; want 2 deleted", n, err)
	}
	all, err := w.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	var left []int
	for _, f := range all {
		left = append(left, int(f.TupleOrig.Proto.SourcePort)-1024)
	}
	slices.Sort(left)
	if !slices.Equal(left, []int{1, 3, 4}) {
		t.Fatalf("flows left %v, want 1 (answered) 3 4 (another link)", left)
	}
}
