package status

import (
	"cmp"
	"container/heap"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"time"

	"flowpin/lb/config"
	"flowpin/nft/ct"
)

// UnpinnedLink names the flows without a flowpin mark, in --link and in
// the listing.
const UnpinnedLink = "unpinned"

// FlowQuery selects and bounds a flow listing.
type FlowQuery struct {
	Link  string // "" for all; a link name or UnpinnedLink
	Limit int    // 0: no limit
}

// FlowRow is one flow as listed. Addresses are "addr:port" ("[addr]:port"
// for IPv6), or a bare address for protocols without ports.
type FlowRow struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	// NATSrc is the source the far end sees, when the box rewrote it
	// (masquerade on the link); NATDst the real destination of a port
	// forward. Null when not rewritten.
	NATSrc *string `json:"nat_src"`
	NATDst *string `json:"nat_dst"`
	Link   string  `json:"link"`
	Mark   uint32  `json:"mark"`
	// AgeSeconds is null unless net.netfilter.nf_conntrack_timestamp was
	// on when the flow started.
	AgeSeconds *int64 `json:"age_seconds"`
	BytesOut   uint64 `json:"bytes_out"`
	BytesIn    uint64 `json:"bytes_in"`
	PacketsOut uint64 `json:"packets_out"`
	PacketsIn  uint64 `json:"packets_in"`
}

// FlowList is the answer of `flowpin status --flows`.
type FlowList struct {
	Schema int `json:"schema"`
	// Matched is how many flows matched the query; Flows holds the
	// Limit largest of them by bytes (both directions), largest first.
	Matched int64     `json:"matched"`
	Flows   []FlowRow `json:"flows"`
}

// flowHeap is a min-heap on total bytes: with a limit, the smallest of the
// kept flows is the one a bigger newcomer replaces. Memory stays at Limit
// records however large the table is.
type flowHeap []ct.FlowRecord

func flowBytes(r *ct.FlowRecord) uint64 { return r.Orig.Bytes + r.Reply.Bytes }

func (h flowHeap) Len() int           { return len(h) }
func (h flowHeap) Less(i, j int) bool { return flowBytes(&h[i]) < flowBytes(&h[j]) }
func (h flowHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *flowHeap) Push(x any)        { *h = append(*h, x.(ct.FlowRecord)) }
func (h *flowHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// collector keeps the flows a query wants while a walk streams past.
type collector struct {
	limit   int
	matched int64
	kept    flowHeap
}

func (c *collector) add(r *ct.FlowRecord) {
	c.matched++
	if c.limit <= 0 || len(c.kept) < c.limit {
		heap.Push(&c.kept, *r)
		return
	}
	if flowBytes(r) > flowBytes(&c.kept[0]) {
		c.kept[0] = *r
		heap.Fix(&c.kept, 0)
	}
}

// merge adds what another collector kept and counted.
func (c *collector) merge(o *collector) {
	matched := c.matched + o.matched
	for i := range o.kept {
		c.add(&o.kept[i])
	}
	c.matched = matched
}

// sorted returns the kept flows, largest first.
func (c *collector) sorted() []ct.FlowRecord {
	out := slices.Clone([]ct.FlowRecord(c.kept))
	slices.SortStableFunc(out, func(a, b ct.FlowRecord) int { return cmp.Compare(flowBytes(&b), flowBytes(&a)) })
	return out
}

// filterFor turns the query's link into a kernel-side mark filter.
func filterFor(c *config.Config, link string) (*ct.MarkFilter, error) {
	switch link {
	case "":
		return nil, nil
	case UnpinnedLink:
		return &ct.MarkFilter{Mark: 0, Mask: c.MarkMask}, nil
	}
	names := []string{}
	for _, l := range c.Links {
		if l.Name == link {
			return &ct.MarkFilter{Mark: l.Mark, Mask: c.MarkMask}, nil
		}
		names = append(names, l.Name)
	}
	return nil, fmt.Errorf("no link %q in %s (links: %v, or %q)", link, c.Path, names, UnpinnedLink)
}

// ListFlows dumps the flows the query selects (filtered by the kernel when
// it names a link) and returns the largest by bytes.
func ListFlows(c *config.Config, conn Conntrack, q FlowQuery, now time.Time) (*FlowList, error) {
	f, err := filterFor(c, q.Link)
	if err != nil {
		return nil, err
	}
	parts := []*ct.MarkFilter{f}
	if f == nil {
		parts = Partition(c, runtime.GOMAXPROCS(0))
	}
	var col collector
	err = ct.RetryInterrupted(func() error {
		cols := make([]collector, len(parts))
		for i := range cols {
			cols[i].limit = q.Limit
		}
		err := conn.WalkParallel(parts, ct.DetailTuples, func(i int, r *ct.FlowRecord) { cols[i].add(r) })
		col = collector{limit: q.Limit}
		for _, pc := range cols {
			col.merge(&pc)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	names := map[uint32]string{0: UnpinnedLink}
	for _, l := range c.Links {
		names[l.Mark] = l.Name
	}
	fl := &FlowList{Schema: StatusSchema, Matched: col.matched, Flows: []FlowRow{}}
	for _, r := range col.sorted() {
		fl.Flows = append(fl.Flows, flowRow(&r, c.MarkMask, names, now))
	}
	return fl, nil
}

func flowRow(r *ct.FlowRecord, mask uint32, names map[uint32]string, now time.Time) FlowRow {
	m := r.Mark & mask
	link, ok := names[m]
	if !ok {
		link = fmt.Sprintf("mark %#x", m)
	}
	row := FlowRow{
		Proto: protoName(r.Proto),
		Src:   r.OrigSrc.String(),
		Dst:   r.OrigDst.String(),
		Link:  link,
		Mark:  m,
		// Orig is what the opener sent: out; Reply came back: in.
		BytesOut: r.Orig.Bytes, BytesIn: r.Reply.Bytes,
		PacketsOut: r.Orig.Packets, PacketsIn: r.Reply.Packets,
	}
	// The reply tuple is the flow as seen coming back: its destination is
	// where replies go (the masqueraded source) and its source is who
	// really answers (after DNAT).
	if r.ReplyDst != r.OrigSrc {
		s := r.ReplyDst.String()
		row.NATSrc = &s
	}
	if r.ReplySrc != r.OrigDst {
		s := r.ReplySrc.String()
		row.NATDst = &s
	}
	if !r.Start.IsZero() {
		age := int64(now.Sub(r.Start) / time.Second)
		row.AgeSeconds = &age
	}
	return row
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 33:
		return "dccp"
	case 47:
		return "gre"
	case 58:
		return "icmpv6"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}
