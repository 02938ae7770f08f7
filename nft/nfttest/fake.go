// Package nfttest is an in-memory stand-in for nft.Conn, in the manner of
// knftables.Fake: it keeps the table last written, reads it back as the
// kernel would, records every transaction as the nft script that does the
// same, and fails on demand.
package nfttest

import (
	"fmt"
	"slices"
	"sync"

	"flowpin/nft"
)

// Fake is flowpin's nft table in memory. The zero value has no table.
type Fake struct {
	mu sync.Mutex
	// spec is the table; nil: none. Record on a missing table makes one
	// with no links, as Conn.Record does.
	spec *nft.Spec

	// Transcript has one entry per committed transaction: the script
	// (Render, RenderRecords) or "nft delete table inet flowpin"; for a
	// use's table, the line UseLine gives.
	Transcript []string
	// Hook, if set, is called with each transaction's script before it
	// is committed; an error fails it whole and nothing changes.
	Hook func(script string) error
	// ReadErr, if set, fails every read (Read, RuleHits, and the read
	// that Apply, Record and Remove make first).
	ReadErr error
	// Hits are the traffic rules' counters by rule name, as the kernel
	// would have counted them (RuleHits).
	Hits map[string]nft.Hits
	// FlowtableNames are the ruleset's flowtables (Flowtables), as
	// "family table name": this kernel cannot create one, so a test
	// sets them here.
	FlowtableNames []string

	// uses are the tables of `flowpin use`, by name (see use.go).
	uses map[string]nft.Use
}

// FailNth makes the nth transaction from now fail with err (n >= 1). It
// replaces any earlier Hook.
func (f *Fake) FailNth(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	count := 0
	f.Hook = func(string) error {
		count++
		if count == n {
			return err
		}
		return nil
	}
}

// FailAlways makes every transaction fail with err.
func (f *Fake) FailAlways(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Hook = func(string) error { return err }
}

// Writes is the number of committed transactions.
func (f *Fake) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.Transcript)
}

// ResetTranscript forgets the transactions so far.
func (f *Fake) ResetTranscript() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Transcript = nil
}

func (f *Fake) commit(script string) error {
	if f.Hook != nil {
		if err := f.Hook(script); err != nil {
			return fmt.Errorf("nft: %w", err)
		}
	}
	f.Transcript = append(f.Transcript, script)
	return nil
}

func (f *Fake) current() *nft.Current {
	if f.spec == nil {
		return &nft.Current{Chains: map[string][]string{}}
	}
	return f.spec.Current()
}

// Read returns the table as the kernel would list it.
func (f *Fake) Read() (*nft.Current, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return nil, f.ReadErr
	}
	return f.current(), nil
}

// Flowtables returns FlowtableNames.
func (f *Fake) Flowtables() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return nil, f.ReadErr
	}
	return slices.Clone(f.FlowtableNames), nil
}

// RuleHits returns the counter of each traffic rule in the table (zero
// unless set in Hits), by rule name; none without a table.
func (f *Fake) RuleHits() (map[string]nft.Hits, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return nil, f.ReadErr
	}
	out := map[string]nft.Hits{}
	if f.spec != nil {
		for _, c := range f.spec.Classes {
			out[c.Name] = f.Hits[c.Name]
		}
	}
	return out, nil
}

// Apply replaces the table with s unless it already is s.
func (f *Fake) Apply(s nft.Spec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return false, f.ReadErr
	}
	if s.UpToDate(f.current()) {
		return false, nil
	}
	if err := f.commit(s.Render()); err != nil {
		return false, err
	}
	s.Links = slices.Clone(s.Links)
	s.Records = s.Records.Clone()
	f.spec = &s
	return true, nil
}

// Record replaces the records, creating a table with no links if there
// is none.
func (f *Fake) Record(records nft.Records) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return false, f.ReadErr
	}
	if cur := f.current(); cur.Exists && slices.Equal(cur.Chains["state"], records.Encode()) {
		return false, nil
	}
	if err := f.commit(nft.RenderRecords(records)); err != nil {
		return false, err
	}
	if f.spec == nil {
		f.spec = &nft.Spec{}
	} else {
		s := *f.spec
		f.spec = &s
	}
	f.spec.Records = records.Clone()
	return true, nil
}

// Remove deletes the table, if there is one.
func (f *Fake) Remove() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return false, f.ReadErr
	}
	if f.spec == nil {
		return false, nil
	}
	if err := f.commit("nft delete table inet " + nft.TableName); err != nil {
		return false, err
	}
	f.spec = nil
	return true, nil
}

// Spec returns the table last written, or nil.
func (f *Fake) Spec() *nft.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spec == nil {
		return nil
	}
	s := *f.spec
	return &s
}

// Dump renders the table as nft would list it ("" without one).
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spec == nil {
		return ""
	}
	return f.spec.Render()
}
