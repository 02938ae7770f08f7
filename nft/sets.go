package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go4.org/netipx"
	"golang.org/x/sys/unix"
)

// NamedSet is a set of addresses the config names, matched by a rule's
// src_set or dst_set. It is two sets in the table, one per family (an
// inet table's set holds addresses of one family): SetName.
type NamedSet struct {
	Name string
	// Timeout, if set, makes it a domain set: a resolver (dnsmasq's
	// nftset, the daemon's resolver) adds its elements, which expire
	// after Timeout unless the adder gives its own. flowpin never flushes
	// or rewrites such a set while the config has it: an element lost is
	// lost until the resolver's cache expires.
	Timeout time.Duration
	// Ranges are a file set's elements, sorted and merged (an interval
	// set refuses overlapping elements).
	Ranges []netipx.IPRange
}

// Dynamic says whether a resolver fills the set.
func (n NamedSet) Dynamic() bool { return n.Timeout > 0 }

// SetName is the table's set that holds a named set's addresses of one
// family. The prefix keeps them apart from flowpin's own sets.
func SetName(name string, v6 bool) string {
	if v6 {
		return "set6_" + name
	}
	return "set4_" + name
}

// setsChain holds one rule per named set, which nothing jumps to: its
// comment carries the digest of a file set's elements, so that a changed
// file makes the table differ without reading the elements back (they
// are read only for Spec.Recheck: FileSetDrift), and only a changed
// file's set is rewritten.
const setsChain = "sets"

func (f family) of(a netip.Addr) bool { return a.Is4() == (f.nfproto == unix.NFPROTO_IPV4) }

// namedSetDefs are the sets of s.Sets, in order, IPv4 then IPv6 for each.
func (s Spec) namedSetDefs() []setDef {
	var out []setDef
	for _, n := range s.Sets {
		for _, f := range families {
			name := SetName(n.Name, f == ipv6)
			if n.Dynamic() {
				out = append(out, setDef{
					set:  &nftables.Set{Name: name, KeyType: f.addr, HasTimeout: true, Timeout: n.Timeout},
					text: fmt.Sprintf("set %s {\n\t\ttype %s\n\t\tflags timeout\n\t\ttimeout %s\n\t}", name, f.addr.Name, nftDuration(n.Timeout)),
					decl: fmt.Sprintf("type %s; flags timeout; timeout %s;", f.addr.Name, nftDuration(n.Timeout)),
				})
				continue
			}
			d := setDef{
				set:    &nftables.Set{Name: name, KeyType: f.addr, Interval: true},
				decl:   fmt.Sprintf("type %s; flags interval;", f.addr.Name),
				refill: true,
			}
			sum := sha256.New()
			var rs []netipx.IPRange
			d.elems = make([]nftables.SetElement, 0, 2*len(n.Ranges))
			for _, r := range n.Ranges {
				if !f.of(r.From()) {
					continue
				}
				rs = append(rs, r)
				from, to := r.From().AsSlice(), r.To().AsSlice()
				d.elems = append(d.elems, nftables.SetElement{Key: from})
				// An interval ends at the first address past it; a range
				// up to the family's last address has no end element.
				if next := r.To().Next(); next.IsValid() && f.of(next) {
					d.elems = append(d.elems, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
				}
				sum.Write(from)
				sum.Write(to)
			}
			d.digest = hex.EncodeToString(sum.Sum(nil)[:8])
			// The text is for Render only: 100k elements are not written
			// out on every apply.
			d.lazyText = func() string {
				texts := make([]string, 0, len(rs))
				for _, r := range rs {
					if p, ok := r.Prefix(); ok {
						texts = append(texts, p.String())
					} else {
						texts = append(texts, r.String())
					}
				}
				elems := ""
				if len(texts) > 0 {
					elems = fmt.Sprintf("\n\t\telements = { %s }", strings.Join(texts, ",\n\t\t\t     "))
				}
				return fmt.Sprintf("set %s {\n\t\ttype %s\n\t\tflags interval%s\n\t}", name, f.addr.Name, elems)
			}
			out = append(out, d)
		}
	}
	return out
}

// namedSetRules are the rules of setsChain.
func (s Spec) namedSetRules(byName map[string]setDef) []rule {
	var out []rule
	for _, n := range s.Sets {
		for _, f := range families {
			name := SetName(n.Name, f == ipv6)
			why := "set " + name
			if d := byName[name]; d.refill {
				why += " " + d.digest
			}
			out = append(out, rule{
				chain: setsChain,
				text:  fmt.Sprintf("meta nfproto %s %s daddr @%s", nfprotoName(f), f.name, name),
				why:   why,
				exprs: join(matchNfproto(f), addrInSet(f, false, name)),
			})
		}
	}
	return out
}

// addrInSet: the packet's source (or destination) address is in set.
func addrInSet(f family, src bool, set string) []expr.Any {
	off := f.saddrOff + uint32(f.addrLen)
	if src {
		off = f.saddrOff
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(f.addrLen)},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

// unchanged says whether cur holds set d with the elements d would write:
// a file set whose digest rule is there as it is now.
func (d setDef) unchanged(cur *Current) bool {
	if !d.refill || d.digest == "" || cur.drifted[d.set.Name] {
		return false
	}
	prefix := "set " + d.set.Name + " " + d.digest + " #"
	for _, cm := range cur.Chains[setsChain] {
		if strings.HasPrefix(cm, prefix) {
			return true
		}
	}
	return false
}

// setKind is what must match for an existing set to be kept as it is:
// the kernel does not change a set's type, flags or timeout when it is
// added again.
func setKind(s *nftables.Set) string {
	if !isNamedSet(s.Name) {
		// The library reads a map's key type back wrong; flowpin's own
		// maps never change kind anyway.
		return ""
	}
	return fmt.Sprintf("%s/map=%t/interval=%t/timeout=%t:%v/dynamic=%t", s.KeyType.Name, s.IsMap, s.Interval, s.HasTimeout, s.Timeout, s.Dynamic)
}

// SetCounts counts the elements of each named set, by the table's set
// name (SetName); a missing set is left out. An interval's end is not an
// element of its own. The elements are listed (listElements: the kernel
// reports no count), which for a 100k-range set is a tenth of a second
// or more: the daemon's metrics count a file set from what it wrote.
func (c *Conn) SetCounts(names []string) (map[string]int, error) {
	out := map[string]int{}
	for _, name := range names {
		es, ok, err := listElements(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		n := 0
		for _, e := range es {
			if !e.end {
				n++
			}
		}
		out[name] = n
	}
	return out, nil
}

// setElements lists set name's elements; nil for a missing set.
func setElements(nc *nftables.Conn, name string) ([]nftables.SetElement, error) {
	st, err := nc.GetSetByName(table(), name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("set %s: %w", name, err)
	}
	es, err := nc.GetSetElements(st)
	if err != nil {
		return nil, fmt.Errorf("elements of set %s: %w", name, err)
	}
	if es == nil {
		es = []nftables.SetElement{}
	}
	return es, nil
}

// SetHas says whether the named set (by its table name) holds a: an
// element equal to it, or an interval around it.
func (c *Conn) SetHas(name string, a netip.Addr) (bool, error) {
	nc, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	st, err := nc.GetSetByName(table(), name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("set %s: %w", name, err)
	}
	es, err := nc.GetSetElements(st)
	if err != nil {
		return false, fmt.Errorf("elements of set %s: %w", name, err)
	}
	return setHolds(es, st.Interval, a.Unmap()), nil
}

// setHolds: es, the elements of a set, hold a. An interval set's
// elements are starts and ends (IntervalEnd): a is in it when the
// greatest element at or below a is a start, as in the kernel's lookup.
func setHolds(es []nftables.SetElement, interval bool, a netip.Addr) bool {
	type key struct {
		addr netip.Addr
		end  bool
	}
	var ks []key
	for _, e := range es {
		k, ok := netip.AddrFromSlice(e.Key)
		if !ok || k.Is4() != a.Is4() {
			continue
		}
		if !interval && k == a {
			return true
		}
		ks = append(ks, key{k, e.IntervalEnd})
	}
	if !interval {
		return false
	}
	slices.SortFunc(ks, func(x, y key) int { return x.addr.Compare(y.addr) })
	in := false
	for _, k := range ks {
		if k.addr.Compare(a) > 0 {
			break
		}
		in = !k.end
	}
	return in
}

// AddToSet adds addresses to the named domain set (by config name), each
// of its family's set, with the given timeout: the daemon's own
// resolver, which knows each answer's TTL. An element that is there has
// its timeout left as it is by the kernel; it is deleted first so the new
// one counts from now. Missing sets are an error: the table is not
// applied yet.
func (c *Conn) AddToSet(name string, addrs []netip.Addr, timeout time.Duration) error {
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	byFam := map[bool][]nftables.SetElement{}
	for _, a := range addrs {
		a = a.Unmap()
		byFam[a.Is6()] = append(byFam[a.Is6()], nftables.SetElement{Key: a.AsSlice(), Timeout: timeout})
	}
	for _, v6 := range []bool{false, true} {
		es := byFam[v6]
		if len(es) == 0 {
			continue
		}
		st, err := nc.GetSetByName(table(), SetName(name, v6))
		if err != nil {
			return fmt.Errorf("set %s: %w", SetName(name, v6), err)
		}
		for _, e := range es {
			// A delete of a missing element fails the whole batch: add
			// first (a no-op when it is there), then delete, then add.
			if err := nc.SetAddElements(st, []nftables.SetElement{e}); err != nil {
				return err
			}
			if err := nc.SetDeleteElements(st, []nftables.SetElement{{Key: e.Key}}); err != nil {
				return err
			}
			if err := nc.SetAddElements(st, []nftables.SetElement{e}); err != nil {
				return err
			}
		}
	}
	c.Writes++
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("add to set %s: %w", name, err)
	}
	return nil
}

// carryElements reads the elements of each domain set that Apply must
// make anew (its timeout changed, or it was a file set), so the new set
// gets them back in the same batch, each with what is left of its
// lifetime (at most the new timeout).
func (l layout) carryElements(cur *Current) error {
	var nc *nftables.Conn
	for i, d := range l.sets {
		if d.refill || !d.set.HasTimeout || d.set.Dynamic || cur.kinds == nil {
			continue
		}
		kind, ok := cur.kinds[d.set.Name]
		if !ok || kind == setKind(d.set) || !strings.HasPrefix(kind, d.set.KeyType.Name+"/") || !strings.Contains(kind, "timeout=true") {
			continue
		}
		if nc == nil {
			var err error
			if nc, err = nftables.New(); err != nil {
				return fmt.Errorf("nftables: %w", err)
			}
		}
		es, err := setElements(nc, d.set.Name)
		if err != nil {
			return err
		}
		carried := []nftables.SetElement{}
		for _, e := range es {
			if e.IntervalEnd {
				continue // a file set's interval ends are not addresses
			}
			left := d.set.Timeout
			if e.Expires > 0 && e.Expires < left {
				left = e.Expires
			}
			carried = append(carried, nftables.SetElement{Key: e.Key, Timeout: left})
		}
		l.sets[i].carried = carried
	}
	return nil
}

func isNamedSet(name string) bool {
	return strings.HasPrefix(name, "set4_") || strings.HasPrefix(name, "set6_")
}
