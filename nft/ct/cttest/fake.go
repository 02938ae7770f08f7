// Package cttest is an in-memory stand-in for the dumps of ct.Conntrack:
// a conntrack table walked as the kernel dumps it, filtered by mark,
// decoded only as far as the walk's detail, and failed on demand.
package cttest

import (
	"slices"
	"sync"
	"time"

	"flowpin/nft/ct"
)

// Fake is a conntrack table in memory. The zero value is an empty table.
type Fake struct {
	mu sync.Mutex
	// Flows is the table.
	Flows []ct.FlowRecord
	// Hook, if set, is called before each dump (one per part of a
	// WalkParallel); an error fails that dump, as ct.ErrDumpInterrupted
	// or a socket error would.
	Hook func() error
	// Labels are the ct labels of the flows by ID, as the kernel lays
	// them out (ct.HasLabel), for the deletions that spare label bits.
	Labels map[uint32][]byte
	dumps  int
}

// FlushUnreplied deletes, as ct.Conntrack's does, the flows of one family
// with (mark & mask) == mark that never saw a reply and carry none of the
// label bits keep. A Hook error fails it before anything is deleted.
func (f *Fake) FlushUnreplied(mark, mask uint32, family uint8, keep []int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Hook != nil {
		if err := f.Hook(); err != nil {
			return 0, err
		}
	}
	n := 0
	f.Flows = slices.DeleteFunc(f.Flows, func(r ct.FlowRecord) bool {
		del := r.Family == family && r.Mark&mask == mark && !r.SeenReply && !ct.HasAnyLabel(f.Labels[r.ID], keep)
		if del {
			n++
		}
		return del
	})
	return n, nil
}

// Dumps is the number of dumps so far: one per Walk, one per part of a
// WalkParallel.
func (f *Fake) Dumps() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dumps
}

// Walk calls fn for each flow filter selects (all if nil). As the kernel's
// dump, it reuses one record for every flow, and fills a flow's tuples
// and start time only for ct.DetailTuples.
func (f *Fake) Walk(filter *ct.MarkFilter, d ct.Detail, fn func(rec *ct.FlowRecord)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.walk(filter, d, fn)
}

// WalkParallel dumps each part in turn (the real one runs them at once;
// calls for one part are sequential in both) and fails, after all parts
// ran, with the first part's error.
func (f *Fake) WalkParallel(parts []*ct.MarkFilter, d ct.Detail, fn func(part int, rec *ct.FlowRecord)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first error
	for i, p := range parts {
		if err := f.walk(p, d, func(rec *ct.FlowRecord) { fn(i, rec) }); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (f *Fake) walk(filter *ct.MarkFilter, d ct.Detail, fn func(rec *ct.FlowRecord)) error {
	f.dumps++
	if f.Hook != nil {
		if err := f.Hook(); err != nil {
			return err
		}
	}
	var rec ct.FlowRecord
	for _, r := range f.Flows {
		if filter != nil && r.Mark&filter.Mask != filter.Mark {
			continue
		}
		rec = r
		if d < ct.DetailTuples {
			rec.Proto = 0
			rec.OrigSrc, rec.OrigDst, rec.ReplySrc, rec.ReplyDst = ct.Endpoint{}, ct.Endpoint{}, ct.Endpoint{}, ct.Endpoint{}
			rec.Start = time.Time{}
		}
		fn(&rec)
	}
	return nil
}
