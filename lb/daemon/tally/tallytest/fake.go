// Package tallytest is a fake conntrack for the flow tally's tests and
// the daemon's.
package tallytest

import (
	"context"
	"sync"

	"flowpin/lb/daemon/tally"
	"flowpin/nft/ct"
)

var _ tally.Table = (*Table)(nil)

// Table is conntrack for the flow tally: a table the test
// edits, and a subscription it feeds. A walk can be held after it read
// the table (hold), so events can race with it.
type Table struct {
	mu     sync.Mutex
	table  map[uint32]ct.FlowRecord
	ch     chan []ct.Event
	walks  int
	hold   chan struct{} // non-nil: the next walk, once read, waits for it to close
	walked chan struct{} // closed when a held walk has read the table
}

// New returns an empty table.
func New() *Table {
	return &Table{table: map[uint32]ct.FlowRecord{}}
}

// Put adds a flow to the table.
func (f *Table) Put(id, mark uint32, family uint8) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table[id] = ct.FlowRecord{ID: id, Mark: mark, Family: family}
}

// Del removes a flow from the table.
func (f *Table) Del(id uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.table, id)
}

// Subscribe is the event stream: what Send delivers.
func (f *Table) Subscribe(ctx context.Context, _ int) (<-chan []ct.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan []ct.Event)
	f.ch = ch
	out := make(chan []ct.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case b := <-ch:
				select {
				case out <- b:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Send delivers one batch and returns once the tracker took it.
func (f *Table) Send(evs ...ct.Event) {
	f.mu.Lock()
	ch := f.ch
	f.mu.Unlock()
	ch <- evs
}

// Settle returns once the tracker is done with every batch sent before:
// it has taken two more (it handles one at a time).
func (f *Table) Settle() {
	f.Send()
	f.Send()
}

// Walk reads the table (and waits, after reading, if HoldNextWalk).
func (f *Table) Walk(_ *ct.MarkFilter, _ ct.Detail, fn func(*ct.FlowRecord)) error {
	f.mu.Lock()
	f.walks++
	recs := make([]ct.FlowRecord, 0, len(f.table))
	for _, r := range f.table {
		recs = append(recs, r)
	}
	hold, walked := f.hold, f.walked
	f.hold = nil
	f.mu.Unlock()
	for i := range recs {
		fn(&recs[i])
	}
	if hold != nil {
		close(walked)
		<-hold
	}
	return nil
}

// WalkCount is how many walks began.
func (f *Table) WalkCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.walks
}

// HoldNextWalk makes the next walk wait, after reading, until release.
func (f *Table) HoldNextWalk() (walked <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.walked = make(chan struct{}), make(chan struct{})
	h := f.hold
	return f.walked, func() { close(h) }
}
