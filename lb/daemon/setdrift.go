package daemon

import (
	"slices"
	"sync/atomic"

	"flowpin/nft"
)

// fileSetCheck says which file sets' elements the next sync compares
// with the kernel's (nft.Spec.Recheck). Listing a 100k-range set takes a
// tenth of a second or more, so a sync with nothing to suspect lists
// none: the sets a notification named (an element deleted, flushed or
// added by hand), and all of them when the daemon starts or lost
// notifications. Owned by Run's goroutine.
type fileSetCheck struct {
	all   bool
	named map[string]bool
	// written: each file set's ranges as the last sync left them
	// (nft.Spec.FileSetCounts), for the metrics' goroutine.
	written atomic.Pointer[map[string]int]
}

func newFileSetCheck() *fileSetCheck { return &fileSetCheck{all: true, named: map[string]bool{}} }

// changed notes that the elements of the table's set name changed, and
// says whether that is a file set's, which the sync must check: a domain
// set's elements are a resolver's, never drift.
func (f *fileSetCheck) changed(spec *nft.Spec, name string) bool {
	if spec == nil || !slices.Contains(spec.FileSets(), name) {
		return false
	}
	f.named[name] = true
	return true
}

// lost: notifications were lost, any set may have changed.
func (f *fileSetCheck) lost() { f.all = true }

// narrow limits the plan's check (all its file sets) to the suspects.
func (f *fileSetCheck) narrow(spec *nft.Spec) {
	if f.all {
		return
	}
	spec.Recheck = slices.DeleteFunc(spec.Recheck, func(name string) bool { return !f.named[name] })
}

// done: a sync applied spec; the sets it checked are as written.
func (f *fileSetCheck) done(spec *nft.Spec) {
	f.all = false
	clear(f.named)
	counts := spec.FileSetCounts()
	f.written.Store(&counts)
}
