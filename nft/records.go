package nft

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The records are kept in the table's "state" chain, one rule comment
// each, as text an operator can read in `nft list table inet flowpin`:
//
//	sysctl net/ipv4/conf/wan1/rp_filter=1   a value as it was before flowpin changed it
//	link isp1 mark=0x200 table=102          a link's mark and table as last applied
//
// This text is the on-kernel format: a table written by an earlier
// flowpin must decode the same (testdata/table-v0.nft), so that an
// upgrade finds the values to put back and the links' marks. Encode and
// DecodeRecords are the only code that reads or writes it.
const (
	sysctlPrefix = "sysctl "
	linkPrefix   = "link "
)

// Records are the values flowpin keeps in its table. They live and die
// with the table in this network namespace, which a file under /run
// would not.
type Records struct {
	// Sysctls are values as they were before flowpin changed them.
	Sysctls []SysctlRecord
	// Links are each link's mark and table as last applied, so a link
	// keeps them while other links come and go.
	Links []LinkRecord
	// Unknown are comments of the chain that are neither (damaged, or
	// written by a newer flowpin). They are kept as found where records
	// are rewritten in part (before the first sysctl changes, and in a
	// rollback); an apply's table drops them.
	Unknown []string
}

// SysctlRecord is a sysctl's value before flowpin; Key is as under
// /proc/sys (net/ipv4/conf/wan1/rp_filter).
type SysctlRecord struct {
	Key, Value string
}

// LinkRecord is the mark and table a link was last applied with.
type LinkRecord struct {
	Name  string
	Mark  uint32
	Table int
}

// Encode is the records as the state chain's comments, in order: the
// sysctls, the links, then the unknown comments as found.
func (r Records) Encode() []string {
	var out []string
	for _, s := range r.Sysctls {
		out = append(out, sysctlPrefix+s.Key+"="+s.Value)
	}
	for _, l := range r.Links {
		out = append(out, fmt.Sprintf("%s%s mark=%#x table=%d", linkPrefix, l.Name, l.Mark, l.Table))
	}
	return append(out, r.Unknown...)
}

// DecodeRecords reads the state chain's comments. It never fails: a
// comment it cannot read is kept in Unknown, and its reader then acts as
// if the record were not there (a link gets fresh values, as on a first
// apply).
func DecodeRecords(comments []string) Records {
	var r Records
	for _, c := range comments {
		if s, ok := decodeSysctl(c); ok {
			r.Sysctls = append(r.Sysctls, s)
		} else if l, ok := decodeLink(c); ok {
			r.Links = append(r.Links, l)
		} else {
			r.Unknown = append(r.Unknown, c)
		}
	}
	return r
}

func decodeSysctl(c string) (SysctlRecord, bool) {
	kv, ok := strings.CutPrefix(c, sysctlPrefix)
	if !ok {
		return SysctlRecord{}, false
	}
	key, val, ok := strings.Cut(kv, "=")
	return SysctlRecord{Key: key, Value: val}, ok
}

func decodeLink(c string) (LinkRecord, bool) {
	rest, ok := strings.CutPrefix(c, linkPrefix)
	if !ok {
		return LinkRecord{}, false
	}
	f := strings.Fields(rest)
	if len(f) != 3 {
		return LinkRecord{}, false
	}
	ms, ok1 := strings.CutPrefix(f[1], "mark=")
	ts, ok2 := strings.CutPrefix(f[2], "table=")
	m, err1 := strconv.ParseUint(ms, 0, 32)
	t, err2 := strconv.ParseUint(ts, 10, 32)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return LinkRecord{}, false
	}
	return LinkRecord{Name: f[0], Mark: uint32(m), Table: int(t)}, true
}

// Equal reports whether r and o hold the same records in the same order.
func (r Records) Equal(o Records) bool {
	return slices.Equal(r.Sysctls, o.Sysctls) && slices.Equal(r.Links, o.Links) && slices.Equal(r.Unknown, o.Unknown)
}

// Clone is a copy that shares no slice with r.
func (r Records) Clone() Records {
	return Records{Sysctls: slices.Clone(r.Sysctls), Links: slices.Clone(r.Links), Unknown: slices.Clone(r.Unknown)}
}

// Link is the record of the named link; of two, the later counts.
func (r Records) Link(name string) (LinkRecord, bool) {
	for i := len(r.Links) - 1; i >= 0; i-- {
		if r.Links[i].Name == name {
			return r.Links[i], true
		}
	}
	return LinkRecord{}, false
}
