package cttest

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"flowpin/nft/ct"
)

func TestFakeWalk(t *testing.T) {
	a := ct.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 40000, HasPort: true}
	f := &Fake{Flows: []ct.FlowRecord{
		{ID: 1, Mark: 0x100, Proto: 6, OrigSrc: a, Start: time.Unix(100, 0), Counted: true, Orig: ct.Counter{Bytes: 10}},
		{ID: 2, Mark: 0x200},
		{ID: 3, Mark: 0x1_0100}, // 0x100 under mask 0xff00, other bits beside
		{ID: 4},
	}}
	ids := func(filter *ct.MarkFilter, d ct.Detail) (out []uint32, recs []ct.FlowRecord) {
		var seen []*ct.FlowRecord
		if err := f.Walk(filter, d, func(r *ct.FlowRecord) {
			out = append(out, r.ID)
			recs = append(recs, *r)
			seen = append(seen, r)
		}); err != nil {
			t.Fatal(err)
		}
		for _, r := range seen[1:] {
			if r != seen[0] {
				t.Error("a walk hands out a new record per flow; the kernel's reuses one")
			}
		}
		return out, recs
	}
	got, recs := ids(nil, ct.DetailCounters)
	if len(got) != 4 {
		t.Errorf("unfiltered walk: %v", got)
	}
	if r := recs[0]; r.Proto != 0 || r.OrigSrc != (ct.Endpoint{}) || !r.Start.IsZero() || !r.Counted || r.Orig.Bytes != 10 || r.Mark != 0x100 {
		t.Errorf("counters walk decoded %+v: tuples and start belong to DetailTuples", r)
	}
	if _, recs := ids(nil, ct.DetailTuples); recs[0].Proto != 6 || recs[0].OrigSrc != a || !recs[0].Start.Equal(time.Unix(100, 0)) {
		t.Errorf("tuples walk decoded %+v", recs[0])
	}
	if got, _ := ids(&ct.MarkFilter{Mark: 0x100, Mask: 0xff00}, ct.DetailCounters); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Errorf("walk of mark 0x100/0xff00: %v, want [1 3]", got)
	}
	if got, _ := ids(&ct.MarkFilter{Mark: 0, Mask: 0xff00}, ct.DetailCounters); len(got) != 1 || got[0] != 4 {
		t.Errorf("walk of mark 0/0xff00: %v, want [4]", got)
	}

	parts := map[int][]uint32{}
	err := f.WalkParallel([]*ct.MarkFilter{{Mark: 0x100, Mask: 0xff00}, {Mark: 0x200, Mask: 0xff00}}, ct.DetailCounters, func(i int, r *ct.FlowRecord) {
		parts[i] = append(parts[i], r.ID)
	})
	if err != nil || len(parts[0]) != 2 || len(parts[1]) != 1 || parts[1][0] != 2 {
		t.Errorf("parallel walk: %v %v", parts, err)
	}
	if n := f.Dumps(); n != 6 {
		t.Errorf("%d dumps, want 6 (4 walks, one of 2 parts)", n)
	}

	f.Hook = func() error { return ct.ErrDumpInterrupted }
	called := false
	err = f.WalkParallel([]*ct.MarkFilter{nil, nil}, ct.DetailCounters, func(int, *ct.FlowRecord) { called = true })
	if !errors.Is(err, ct.ErrDumpInterrupted) || called {
		t.Errorf("failed dumps: %v, flows seen: %v", err, called)
	}
}

func TestFakeFlushUnreplied(t *testing.T) {
	f := &Fake{Flows: []ct.FlowRecord{
		{ID: 1, Family: 2, Mark: 0x100, SeenReply: true},
		{ID: 2, Family: 2, Mark: 0x100},
		{ID: 3, Family: 2, Mark: 0x100},
		{ID: 4, Family: 10, Mark: 0x100},
		{ID: 5, Family: 2, Mark: 0x200},
	}, Labels: map[uint32][]byte{3: {1}}}
	n, err := f.FlushUnreplied(0x100, 0xff00, 2, []int{0})
	if err != nil || n != 1 {
		t.Fatalf("FlushUnreplied: %d, %v; want 1", n, err)
	}
	var left []uint32
	_ = f.Walk(nil, ct.DetailCounters, func(r *ct.FlowRecord) { left = append(left, r.ID) })
	if len(left) != 4 || left[1] != 3 {
		t.Errorf("left %v, want 1 3 4 5", left)
	}
	f.Hook = func() error { return errors.New("boom") }
	if _, err := f.FlushUnreplied(0x100, 0xff00, 2, nil); err == nil {
		t.Error("a failing hook did not fail the deletion")
	}
}
