// Package ct is all of flowpin's conntrack access, on one handle per
// network namespace: a streaming dump that decodes only what is asked for,
// lookup of one flow, and deletion of the flows of one mark.
package ct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Conntrack attribute numbers from uapi/linux/netfilter/nfnetlink_conntrack.h.
// ti-mo/conntrack keeps its copies unexported.
const (
	ipctnlMsgCtNew = 0 // IPCTNL_MSG_CT_NEW: every dumped flow comes as one
	ipctnlMsgCtGet = 1 // IPCTNL_MSG_CT_GET

	ctaTupleOrig     = 1
	ctaTupleReply    = 2
	ctaStatus        = 3
	ctaMark          = 8
	ctaCountersOrig  = 9
	ctaCountersReply = 10
	ctaID            = 12
	ctaTimestamp     = 20
	ctaMarkMask      = 21

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	ctaCountersPackets = 1
	ctaCountersBytes   = 2

	ctaTimestampStart = 1
)

// Detail says how much of each flow a walk decodes. The summary needs the
// mark and the counters only; skipping the tuples is most of what makes it
// cheap.
type Detail int

const (
	DetailCounters Detail = iota
	DetailTuples
)

// Counter is one direction's packet and byte count.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Endpoint is one side of a tuple. Port is valid only when HasPort (TCP,
// UDP, SCTP, DCCP, UDP-Lite).
type Endpoint struct {
	Addr    netip.Addr
	Port    uint16
	HasPort bool
}

// FlowRecord is one conntrack entry, decoded as far as the walk's Detail.
// A walk reuses one record for every flow: copy what you keep.
type FlowRecord struct {
	Family uint8 // AF_INET, AF_INET6
	// ID is the kernel's identifier of the entry (CTA_ID): the same in
	// dumps and in events for as long as the entry lives.
	ID   uint32
	Mark uint32
	// SeenReply: a packet has travelled in the reply direction
	// (IPS_SEEN_REPLY in CTA_STATUS): the far end answered.
	SeenReply bool
	// Counted: the entry carries counters (nf_conntrack_acct was on when
	// it was created).
	Counted bool
	Orig    Counter // the direction of the side that opened the flow
	Reply   Counter

	// DetailTuples only.
	Proto              uint8
	OrigSrc, OrigDst   Endpoint
	ReplySrc, ReplyDst Endpoint
	// Start is zero unless net.netfilter.nf_conntrack_timestamp was on
	// when the flow was created.
	Start time.Time
}

func (r *FlowRecord) reset() { *r = FlowRecord{} }

// MarkFilter selects flows with (ct mark & Mask) == Mark. The kernel
// applies it during the dump, so filtered-out flows never cross into user
// space.
type MarkFilter struct {
	Mark, Mask uint32
}

// Conntrack reads the connection tracking table of one network namespace
// as a stream. ti-mo/conntrack's Dump decodes every flow fully into one
// slice (about 500 MiB at 200k flows); a walk here holds one receive buffer
// and one record per socket at a time. The zero value reads the caller's
// namespace and opens its sockets on first use (Open opens one at once).
type Conntrack struct {
	netns int
	socks []*dumpSocket // one per concurrent dump, opened on first use

	mu  sync.Mutex
	req *conntrack.Conn // lookups and flushes, opened on first use
}

type dumpSocket struct {
	c   *netlink.Conn
	buf []byte
}

// Open opens a ctnetlink socket in the network namespace netnsFD
// refers to; 0 means the namespace of the caller, which under
// `ip netns exec NS` is NS.
func Open(netnsFD int) (*Conntrack, error) {
	ct := &Conntrack{netns: netnsFD}
	if _, err := ct.socket(0); err != nil {
		return nil, err
	}
	return ct, nil
}

func (ct *Conntrack) socket(i int) (*dumpSocket, error) {
	for len(ct.socks) <= i {
		c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ct.netns})
		if err != nil {
			return nil, fmt.Errorf("open conntrack netlink socket: %w", err)
		}
		// A ctnetlink dump fills at most 32 KiB per batch (netlink_recvmsg
		// caps max_recvmsg_len there); twice that leaves room.
		ct.socks = append(ct.socks, &dumpSocket{c: c, buf: make([]byte, 64<<10)})
	}
	return ct.socks[i], nil
}

// Close releases the sockets.
func (ct *Conntrack) Close() error {
	var errs []error
	for _, s := range ct.socks {
		errs = append(errs, s.c.Close())
	}
	ct.socks = nil
	ct.mu.Lock()
	if ct.req != nil {
		errs = append(errs, ct.req.Close())
		ct.req = nil
	}
	ct.mu.Unlock()
	return errors.Join(errs...)
}

// ErrDumpInterrupted: the table changed under the dump in a way the kernel
// flagged (NLM_F_DUMP_INTR); the flows seen may be incomplete.
var ErrDumpInterrupted = errors.New("conntrack dump interrupted by a concurrent change")

// Walk dumps the table (only flows matching f, if f is not nil) and calls fn
// once per flow, decoding only what d asks for. fn must not keep rec.
func (ct *Conntrack) Walk(f *MarkFilter, d Detail, fn func(rec *FlowRecord)) error {
	s, err := ct.socket(0)
	if err != nil {
		return err
	}
	return s.walk(f, d, fn)
}

// WalkParallel runs one dump per part, each on its own socket and
// goroutine, and calls fn(i, rec) for the flows of part i. Calls for one
// part are sequential; calls for different parts run concurrently.
//
// Most of a dump's cost is the kernel serializing each flow (about 3.5 us
// per flow here, in the recvmsg of the socket that asked), and a filtered
// dump serializes only the flows that match. Dumps of disjoint parts on
// different cores therefore divide the wall time by the number of cores.
func (ct *Conntrack) WalkParallel(parts []*MarkFilter, d Detail, fn func(part int, rec *FlowRecord)) error {
	for i := range parts {
		if _, err := ct.socket(i); err != nil {
			return err
		}
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, f := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ct.socks[i].walk(f, d, func(rec *FlowRecord) { fn(i, rec) })
		}()
	}
	wg.Wait()
	for _, err := range errs {
		// One interrupted part means the whole answer is suspect.
		if errors.Is(err, ErrDumpInterrupted) {
			return err
		}
	}
	return errors.Join(errs...)
}

// WeightedMark is one link's mark and its share of new flows.
type WeightedMark struct {
	Mark   uint32
	Weight int
}

// Partition splits the table into up to n disjoint parts that together
// hold every flow, for WalkParallel. Each part is the flows whose mark has
// a given value on a few bits of the mask: (mark & bits) == value over all
// values is a partition whatever marks the flows carry, including none and
// marks no link has. The bits are picked so the configured weights spread
// evenly over the parts. n is rounded down to a power of two, at most 8.
func Partition(mask uint32, links []WeightedMark, n int) []*MarkFilter {
	k := 0
	for k < 3 && 1<<(k+1) <= n {
		k++
	}
	var chosen uint32
	for range k {
		best, bestLoad := uint32(0), -1
		for bit := uint32(1); bit != 0; bit <<= 1 {
			if mask&bit == 0 || chosen&bit != 0 {
				continue
			}
			// The heaviest part if this bit were added.
			load := map[uint32]int{}
			heaviest := 0
			for _, l := range links {
				v := l.Mark & (chosen | bit)
				load[v] += l.Weight
				heaviest = max(heaviest, load[v])
			}
			if bestLoad < 0 || heaviest < bestLoad {
				best, bestLoad = bit, heaviest
			}
		}
		if best == 0 {
			break // the mask has no bit left
		}
		chosen |= best
	}
	if chosen == 0 {
		return []*MarkFilter{nil}
	}
	// Every value of the chosen bits: iterate the subsets of chosen.
	var parts []*MarkFilter
	for v := uint32(0); ; v = (v - chosen) & chosen {
		parts = append(parts, &MarkFilter{Mark: v, Mask: chosen})
		if v == chosen {
			break
		}
	}
	return parts
}

func (s *dumpSocket) walk(f *MarkFilter, d Detail, fn func(rec *FlowRecord)) error {
	var attrs []netfilter.Attribute
	if f != nil {
		attrs = []netfilter.Attribute{
			{Type: ctaMark, Data: netfilter.Uint32Bytes(f.Mark)},
			{Type: ctaMarkMask, Data: netfilter.Uint32Bytes(f.Mask)},
		}
	}
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: ipctnlMsgCtGet,
		Family:      netfilter.ProtoUnspec, // IPv4 and IPv6
		Flags:       netlink.Request | netlink.Dump,
	}, attrs)
	if err != nil {
		return fmt.Errorf("build conntrack dump request: %w", err)
	}
	sent, err := s.c.Send(req)
	if err != nil {
		return fmt.Errorf("send conntrack dump request: %w", err)
	}
	// netlink.Conn.Receive gathers a whole multi-part dump before it
	// returns; read the socket ourselves to handle one batch at a time.
	raw, err := s.c.SyscallConn()
	if err != nil {
		return fmt.Errorf("conntrack socket: %w", err)
	}
	var rec FlowRecord
	interrupted := false
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			// MSG_TRUNC makes n the real length, so a batch larger than
			// the buffer is reported instead of silently cut.
			n, _, rerr = unix.Recvfrom(int(fd), s.buf, unix.MSG_TRUNC)
			return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
		}); err != nil {
			return fmt.Errorf("read conntrack dump: %w", err)
		}
		if rerr != nil {
			return fmt.Errorf("read conntrack dump: %w", rerr)
		}
		if n > len(s.buf) {
			return fmt.Errorf("read conntrack dump: %d-byte batch does not fit the %d-byte buffer", n, len(s.buf))
		}
		done, err := decodeBatch(s.buf[:n], sent.Header.Sequence, d, &rec, &interrupted, fn)
		if done || err != nil {
			return err
		}
	}
}

// decodeBatch decodes one read of a dump's answer and calls fn for each
// flow in it. done: the dump ended (the error then says how). Messages of
// other sequence numbers are answers to earlier requests and skipped.
// *interrupted is set when the kernel flags any part of the dump
// NLM_F_DUMP_INTR.
func decodeBatch(b []byte, seq uint32, d Detail, rec *FlowRecord, interrupted *bool, fn func(rec *FlowRecord)) (done bool, err error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return true, fmt.Errorf("parse conntrack dump: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Seq != seq {
			continue // a late answer to an earlier request
		}
		if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
			*interrupted = true
		}
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			if *interrupted {
				return true, ErrDumpInterrupted
			}
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code < 0 {
					return true, fmt.Errorf("conntrack dump: %w", syscall.Errno(-code))
				}
			}
			continue
		}
		if m.Header.Type != uint16(netfilter.NFSubsysCTNetlink)<<8|ipctnlMsgCtNew || len(m.Data) < 4 {
			continue
		}
		rec.reset()
		rec.Family = m.Data[0]
		if err := decodeFlow(m.Data[4:], d, rec); err != nil {
			return true, fmt.Errorf("decode conntrack entry: %w", err)
		}
		fn(rec)
	}
	return false, nil
}

// decodeFlow reads the attributes of one ctnetlink message (after the
// nfgenmsg header).
func decodeFlow(b []byte, d Detail, rec *FlowRecord) error {
	it := attrs{b: b}
	for it.next() {
		switch it.typ {
		case ctaMark:
			rec.Mark = it.u32()
		case ctaStatus:
			rec.SeenReply = it.u32()&ipsSeenReply != 0
		case ctaID:
			rec.ID = it.u32()
		case ctaCountersOrig:
			rec.Counted = true
			it.err = decodeCounter(it.data, &rec.Orig)
		case ctaCountersReply:
			rec.Counted = true
			it.err = decodeCounter(it.data, &rec.Reply)
		case ctaTupleOrig:
			if d >= DetailTuples {
				it.err = decodeTuple(it.data, rec, &rec.OrigSrc, &rec.OrigDst)
			}
		case ctaTupleReply:
			if d >= DetailTuples {
				it.err = decodeTuple(it.data, rec, &rec.ReplySrc, &rec.ReplyDst)
			}
		case ctaTimestamp:
			if d >= DetailTuples {
				ts := attrs{b: it.data}
				for ts.next() {
					if ts.typ == ctaTimestampStart {
						rec.Start = time.Unix(0, int64(ts.u64()))
					}
				}
				it.err = ts.err
			}
		}
	}
	return it.err
}

// attrs walks netlink attributes without allocating. mdlayher/netlink's
// AttributeDecoder allocates a decoder and two closures for every nested
// attribute: 17 allocations per flow measured, a third of the user time of
// a 200k-flow status. Attribute headers are host-endian; ctnetlink's
// values are big-endian.
type attrs struct {
	b    []byte
	typ  uint16
	data []byte
	err  error
}

func (a *attrs) next() bool {
	if a.err != nil || len(a.b) == 0 {
		return false
	}
	if len(a.b) < unix.SizeofNlAttr {
		a.err = errors.New("truncated netlink attribute header")
		return false
	}
	n := int(binary.NativeEndian.Uint16(a.b))
	if n < unix.SizeofNlAttr || n > len(a.b) {
		a.err = fmt.Errorf("netlink attribute of length %d in %d bytes", n, len(a.b))
		return false
	}
	a.typ = binary.NativeEndian.Uint16(a.b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	a.data = a.b[unix.SizeofNlAttr:n]
	a.b = a.b[min((n+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(a.b)):]
	return true
}

// u8, u16, u32 and u64 read a big-endian value; a wrong size is an error.
func (a *attrs) u8() uint8 {
	if len(a.data) != 1 {
		a.sizeErr(1)
		return 0
	}
	return a.data[0]
}

func (a *attrs) u16() uint16 {
	if len(a.data) != 2 {
		a.sizeErr(2)
		return 0
	}
	return binary.BigEndian.Uint16(a.data)
}

func (a *attrs) u32() uint32 {
	if len(a.data) != 4 {
		a.sizeErr(4)
		return 0
	}
	return binary.BigEndian.Uint32(a.data)
}

func (a *attrs) u64() uint64 {
	if len(a.data) != 8 {
		a.sizeErr(8)
		return 0
	}
	return binary.BigEndian.Uint64(a.data)
}

func (a *attrs) sizeErr(want int) {
	a.err = fmt.Errorf("netlink attribute %d: %d bytes, want %d", a.typ, len(a.data), want)
}

func decodeCounter(b []byte, c *Counter) error {
	it := attrs{b: b}
	for it.next() {
		switch it.typ {
		case ctaCountersPackets:
			c.Packets = it.u64()
		case ctaCountersBytes:
			c.Bytes = it.u64()
		}
	}
	return it.err
}

func decodeTuple(b []byte, rec *FlowRecord, src, dst *Endpoint) error {
	it := attrs{b: b}
	for it.next() {
		switch it.typ {
		case ctaTupleIP:
			ip := attrs{b: it.data}
			for ip.next() {
				a, ok := netip.AddrFromSlice(ip.data)
				if !ok {
					continue
				}
				switch ip.typ {
				case ctaIPv4Src, ctaIPv6Src:
					src.Addr = a
				case ctaIPv4Dst, ctaIPv6Dst:
					dst.Addr = a
				}
			}
			it.err = ip.err
		case ctaTupleProto:
			p := attrs{b: it.data}
			for p.next() {
				switch p.typ {
				case ctaProtoNum:
					rec.Proto = p.u8()
				case ctaProtoSrcPort:
					src.Port, src.HasPort = p.u16(), true
				case ctaProtoDstPort:
					dst.Port, dst.HasPort = p.u16(), true
				}
			}
			it.err = p.err
		}
	}
	return it.err
}

// RetryInterrupted reruns a dump the kernel flagged as interrupted, so nobody
// reads counts from a partial table.
func RetryInterrupted(f func() error) error {
	var err error
	for range 5 {
		if err = f(); !errors.Is(err, ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

func (e Endpoint) String() string {
	if !e.HasPort {
		return e.Addr.String()
	}
	return netip.AddrPortFrom(e.Addr, e.Port).String()
}
