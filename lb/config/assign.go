package config

// Applied is a link's mark and table as last applied in this network
// namespace.
type Applied struct {
	Mark  uint32
	Table int
}

// AppliedReader reads what was last applied in the namespace: in
// production the records in flowpin's nft table, which this package
// cannot import (the command hands in the adapter).
type AppliedReader interface {
	// AppliedLinks is each link's mark and table as last applied, by
	// link name; empty before the first apply.
	AppliedLinks() (map[string]Applied, error)
}

// LoadResolved is the load step of every command that reads links'
// marks or tables, and of the daemon's reload: Load, then Resolve.
func LoadResolved(path string, r AppliedReader) (*Config, error) {
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	return Resolve(c, r)
}

// Resolve gives each link the mark and table it was last applied with in
// this namespace, unless the config sets them: a link keeps them while
// other links come and go (see Assign). With ha, the history is not read:
// both nodes of a pair must give each link the same mark and table, and
// only the config is the same on both, so they are Assign's from the
// config alone (a flow synced from the peer carries the peer's mark).
func Resolve(c *Config, r AppliedReader) (*Config, error) {
	if c.HA {
		return Assign(c, nil)
	}
	applied, err := r.AppliedLinks()
	if err != nil {
		return nil, err
	}
	return Assign(c, applied)
}

// Assign gives every link whose config does not set its mark or table the
// value applied for it by name the last time, so a link keeps its mark
// and table (and its established flows their route) while other links
// are removed, inserted or reordered, and across restarts. A link without
// one gets the lowest free value, avoiding values applied for links that
// are gone (their flows may still carry the mark until apply flushes
// them). An applied value outside the mask or on a reserved table is not
// kept. Explicit values in the config always win. It returns a copy; c is
// not changed. It is pure.
func Assign(c *Config, applied map[string]Applied) (*Config, error) {
	out := *c
	out.Links = make([]Link, len(c.Links))
	copy(out.Links, c.Links)

	usedMark := map[uint32]bool{}
	usedTable := map[int]bool{c.BalanceTable: true}
	for _, l := range out.Links {
		if l.MarkSet {
			usedMark[l.Mark] = true
		}
		if l.TableSet {
			usedTable[l.Table] = true
		}
	}
	markDone := make([]bool, len(out.Links))
	tableDone := make([]bool, len(out.Links))
	for i := range out.Links {
		l := &out.Links[i]
		r, ok := applied[l.Name]
		if !ok {
			continue
		}
		if !l.MarkSet && r.Mark != 0 && r.Mark&^c.MarkMask == 0 && !usedMark[r.Mark] {
			l.Mark, markDone[i] = r.Mark, true
			usedMark[r.Mark] = true
		}
		if !l.TableSet && validTable(r.Table) && !usedTable[r.Table] {
			l.Table, tableDone[i] = r.Table, true
			usedTable[r.Table] = true
		}
	}
	avoidMark := map[uint32]bool{}
	avoidTable := map[int]bool{}
	for _, r := range applied {
		avoidMark[r.Mark] = true
		avoidTable[r.Table] = true
	}
	values := MaskValues(c.MarkMask)
	for i := range out.Links {
		l := &out.Links[i]
		if !l.MarkSet && !markDone[i] {
			m, ok := lowestFree(values, usedMark, avoidMark)
			if !ok {
				return nil, c.LinkError(i, "mark", "mark_mask %#x has room for %d links only", c.MarkMask, len(values))
			}
			l.Mark = m
			usedMark[m] = true
		}
		if !l.TableSet && !tableDone[i] {
			t, ok := lowestFreeTable(c.BalanceTable+1, usedTable, avoidTable)
			if !ok {
				return nil, c.LinkError(i, "table", "no free routing table id above balance_table %d", c.BalanceTable)
			}
			l.Table = t
			usedTable[t] = true
		}
	}
	return &out, nil
}

func validTable(t int) bool { return CheckTableID(int64(t)) == nil }

// lowestFree is the first value not used, preferring one not avoided.
func lowestFree(values []uint32, used, avoid map[uint32]bool) (uint32, bool) {
	for _, pass := range []map[uint32]bool{avoid, nil} {
		for _, v := range values {
			if !used[v] && !pass[v] {
				return v, true
			}
		}
	}
	return 0, false
}

func lowestFreeTable(from int, used, avoid map[int]bool) (int, bool) {
	for _, pass := range []map[int]bool{avoid, nil} {
		// A link needs at most MaxLinks tables; look a little further so
		// that used and avoided ids cannot run it out.
		for t, n := from, 0; t <= 0xffffffff && n < 4*MaxLinks+8; t++ {
			if !validTable(t) {
				continue
			}
			n++
			if !used[t] && !pass[t] {
				return t, true
			}
		}
	}
	return 0, false
}
