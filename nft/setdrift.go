package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"
)

// SetDrift is a file set whose elements in the kernel are not the ones
// flowpin wrote: deleted, flushed or added by hand or by another tool.
// A file set's digest rule (setsChain) says what was written, not what
// is there, so only its elements show this.
type SetDrift struct {
	// Set is the table's set (SetName).
	Set string
	// Want is how many ranges flowpin wrote; Missing of them are not in
	// the kernel, and Extra ranges are there that it did not write.
	Want, Missing, Extra int
}

func (d SetDrift) String() string {
	return fmt.Sprintf("%s: %d of its %d ranges missing, %d not written by flowpin", d.Set, d.Missing, d.Want, d.Extra)
}

// fileSetRanges are the ranges each file set of s holds, by the table's
// set name: the sets whose elements flowpin alone writes. A domain set's
// are a resolver's.
func (s Spec) fileSetRanges() map[string][]netipx.IPRange {
	out := map[string][]netipx.IPRange{}
	for _, n := range s.Sets {
		if n.Dynamic() {
			continue
		}
		for _, f := range families {
			var rs []netipx.IPRange
			for _, r := range n.Ranges {
				if f.of(r.From()) {
					rs = append(rs, r)
				}
			}
			out[SetName(n.Name, f == ipv6)] = rs
		}
	}
	return out
}

// FileSets are the table's set names of the spec's file sets, in order.
func (s Spec) FileSets() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for name := range s.fileSetRanges() {
			if !yield(name) {
				return
			}
		}
	})
}

// FileSetDrift compares the elements of the spec's file sets named in
// names (the table's set names; others are left out) with what the spec
// writes. A set missing from the table is not reported here: the table's
// own comparison finds it. Each set is listed from the kernel, which for
// a 100k-range set takes a tenth of a second or more: the daemon asks
// only about the sets a notification named.
func (c *Conn) FileSetDrift(s Spec, names []string) ([]SetDrift, error) {
	want := s.fileSetRanges()
	var out []SetDrift
	for _, name := range names {
		rs, ok := want[name]
		if !ok {
			continue
		}
		es, ok, err := listElements(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if d := compareRanges(name, rs, kernelRanges(es, strings.HasPrefix(name, "set6_"))); d.Missing > 0 || d.Extra > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// kernelRanges turns an interval set's elements, starts and ends in
// whatever order the kernel lists them, into ranges. An interval ends
// at the address before its end element; a start with no end after it
// runs to the family's last address.
func kernelRanges(es []kernelElem, v6 bool) []netipx.IPRange {
	slices.SortFunc(es, func(a, b kernelElem) int {
		if c := a.key.Compare(b.key); c != 0 {
			return c
		}
		// At one address, the end of a range before the start of the
		// next (two adjacent ranges an operator added).
		switch {
		case a.end && !b.end:
			return -1
		case b.end && !a.end:
			return 1
		}
		return 0
	})
	all := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if v6 {
		all = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	var out []netipx.IPRange
	for i, e := range es {
		if e.end || !e.key.IsValid() {
			continue
		}
		to := netipx.PrefixLastIP(all)
		if i+1 < len(es) {
			to = es[i+1].key.Prev()
		}
		out = append(out, netipx.IPRangeFrom(e.key, to))
	}
	return out
}

// compareRanges counts the ranges of want not in have and those of have
// not in want; both are sorted.
func compareRanges(name string, want, have []netipx.IPRange) SetDrift {
	d := SetDrift{Set: name, Want: len(want)}
	i, j := 0, 0
	for i < len(want) && j < len(have) {
		switch c := want[i].From().Compare(have[j].From()); {
		case c == 0 && want[i].To() == have[j].To():
			i++
			j++
		case c < 0 || c == 0 && want[i].To().Less(have[j].To()):
			d.Missing++
			i++
		default:
			d.Extra++
			j++
		}
	}
	d.Missing += len(want) - i
	d.Extra += len(have) - j
	return d
}

// recheck marks in cur the file sets of s.Recheck whose elements differ
// from the spec's, so that Apply writes them again. A set Apply writes
// anyway (its file changed, or it is new) is not listed.
func (c *Conn) recheck(l layout, s Spec, cur *Current) error {
	if len(s.Recheck) == 0 || !cur.Exists {
		return nil
	}
	var names []string
	for _, d := range l.sets {
		if slices.Contains(s.Recheck, d.set.Name) && slices.Contains(cur.Sets, d.set.Name) && d.unchanged(cur) {
			names = append(names, d.set.Name)
		}
	}
	drift, err := c.FileSetDrift(s, names)
	if err != nil {
		return err
	}
	for _, d := range drift {
		if cur.drifted == nil {
			cur.drifted = map[string]bool{}
		}
		cur.drifted[d.Set] = true
	}
	return nil
}

// CheckElements marks in cur, as Apply does, the file sets of s.Recheck
// whose elements differ from the spec's: UpToDate is then false, and
// Render's script writes them again (plan shows what apply would do).
func (c *Conn) CheckElements(s Spec, cur *Current) error { return c.recheck(s.layout(), s, cur) }

// FileSetCounts is how many ranges each file set of s holds in each
// family, by the table's set name: what Apply writes, as SetCounts
// counts them.
func (s Spec) FileSetCounts() map[string]int {
	out := map[string]int{}
	for name, rs := range s.fileSetRanges() {
		out[name] = len(rs)
	}
	return out
}
