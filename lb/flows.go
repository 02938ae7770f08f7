package lb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
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
	ctaMark          = 8
	ctaCountersOrig  = 9
	ctaCountersReply = 10
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
	Mark   uint32
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
// and one record at a time.
type Conntrack struct {
	c   *netlink.Conn
	buf []byte
}

// OpenConntrack opens a ctnetlink socket in the network namespace netnsFD
// refers to; 0 means the namespace of the caller, which under
// `ip netns exec NS` is NS.
func OpenConntrack(netnsFD int) (*Conntrack, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("open conntrack netlink socket: %w", err)
	}
	// A ctnetlink dump fills at most 32 KiB per message batch
	// (netlink_recvmsg caps max_recvmsg_len there); twice that leaves room.
	return &Conntrack{c: c, buf: make([]byte, 64<<10)}, nil
}

// Close releases the socket.
func (ct *Conntrack) Close() error { return ct.c.Close() }

// errDumpInterrupted: the table changed under the dump in a way the kernel
// flagged (NLM_F_DUMP_INTR); the flows seen may be incomplete.
var errDumpInterrupted = errors.New("conntrack dump interrupted by a concurrent change")

// Walk dumps the table (only flows matching f, if f is not nil) and calls fn
// once per flow, decoding only what d asks for. fn must not keep rec.
func (ct *Conntrack) Walk(f *MarkFilter, d Detail, fn func(rec *FlowRecord)) error {
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
	sent, err := ct.c.Send(req)
	if err != nil {
		return fmt.Errorf("send conntrack dump request: %w", err)
	}
	// netlink.Conn.Receive gathers a whole multi-part dump before it
	// returns; read the socket ourselves to handle one batch at a time.
	raw, err := ct.c.SyscallConn()
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
			n, _, rerr = unix.Recvfrom(int(fd), ct.buf, unix.MSG_TRUNC)
			return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
		}); err != nil {
			return fmt.Errorf("read conntrack dump: %w", err)
		}
		if rerr != nil {
			return fmt.Errorf("read conntrack dump: %w", rerr)
		}
		if n > len(ct.buf) {
			return fmt.Errorf("read conntrack dump: %d-byte batch does not fit the %d-byte buffer", n, len(ct.buf))
		}
		msgs, err := syscall.ParseNetlinkMessage(ct.buf[:n])
		if err != nil {
			return fmt.Errorf("parse conntrack dump: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != sent.Header.Sequence {
				continue // a late answer to an earlier request
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if interrupted {
					return errDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data)); code < 0 {
						return fmt.Errorf("conntrack dump: %w", syscall.Errno(-code))
					}
				}
				continue
			}
			if m.Header.Type != uint16(netfilter.NFSubsysCTNetlink)<<8|ipctnlMsgCtNew || len(m.Data) < 4 {
				continue
			}
			rec.reset()
			rec.Family = m.Data[0]
			if err := decodeFlow(m.Data[4:], d, &rec); err != nil {
				return fmt.Errorf("decode conntrack entry: %w", err)
			}
			fn(&rec)
		}
	}
}

// decodeFlow reads the attributes of one ctnetlink message (after the
// nfgenmsg header).
func decodeFlow(b []byte, d Detail, rec *FlowRecord) error {
	ad, err := netfilter.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		switch ad.Type() {
		case ctaMark:
			rec.Mark = ad.Uint32()
		case ctaCountersOrig:
			rec.Counted = true
			ad.Nested(counterDecoder(&rec.Orig))
		case ctaCountersReply:
			rec.Counted = true
			ad.Nested(counterDecoder(&rec.Reply))
		case ctaTupleOrig:
			if d >= DetailTuples {
				ad.Nested(tupleDecoder(rec, &rec.OrigSrc, &rec.OrigDst))
			}
		case ctaTupleReply:
			if d >= DetailTuples {
				ad.Nested(tupleDecoder(rec, &rec.ReplySrc, &rec.ReplyDst))
			}
		case ctaTimestamp:
			if d >= DetailTuples {
				ad.Nested(func(nad *netlink.AttributeDecoder) error {
					for nad.Next() {
						if nad.Type() == ctaTimestampStart {
							rec.Start = time.Unix(0, int64(nad.Uint64()))
						}
					}
					return nil
				})
			}
		}
	}
	return ad.Err()
}

func counterDecoder(c *Counter) func(*netlink.AttributeDecoder) error {
	return func(nad *netlink.AttributeDecoder) error {
		for nad.Next() {
			switch nad.Type() {
			case ctaCountersPackets:
				c.Packets = nad.Uint64()
			case ctaCountersBytes:
				c.Bytes = nad.Uint64()
			}
		}
		return nil
	}
}

func tupleDecoder(rec *FlowRecord, src, dst *Endpoint) func(*netlink.AttributeDecoder) error {
	return func(nad *netlink.AttributeDecoder) error {
		for nad.Next() {
			switch nad.Type() {
			case ctaTupleIP:
				nad.Nested(func(ip *netlink.AttributeDecoder) error {
					for ip.Next() {
						a, ok := netip.AddrFromSlice(ip.Bytes())
						if !ok {
							continue
						}
						switch ip.Type() {
						case ctaIPv4Src, ctaIPv6Src:
							src.Addr = a
						case ctaIPv4Dst, ctaIPv6Dst:
							dst.Addr = a
						}
					}
					return nil
				})
			case ctaTupleProto:
				nad.Nested(func(p *netlink.AttributeDecoder) error {
					for p.Next() {
						switch p.Type() {
						case ctaProtoNum:
							rec.Proto = p.Uint8()
						case ctaProtoSrcPort:
							src.Port, src.HasPort = p.Uint16(), true
						case ctaProtoDstPort:
							dst.Port, dst.HasPort = p.Uint16(), true
						}
					}
					return nil
				})
			}
		}
		return nil
	}
}
