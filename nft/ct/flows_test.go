package ct

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
)

// ctMessage encodes a ctnetlink flow the way the kernel sends it in a dump
// (attributes big-endian, nested ones flagged NLA_F_NESTED).
type ctMessage struct {
	proto          uint8
	src, dst       netip.AddrPort
	rsrc, rdst     netip.AddrPort
	mark           uint32
	counters       bool
	orig, reply    Counter
	start          time.Time
	noPorts, noMrk bool
	unreplied      bool // a status without IPS_SEEN_REPLY
}

func (m ctMessage) encode(t testing.TB) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	tuple := func(src, dst netip.AddrPort) func(*netlink.AttributeEncoder) error {
		return func(te *netlink.AttributeEncoder) error {
			te.Nested(ctaTupleIP, func(ie *netlink.AttributeEncoder) error {
				s, d := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
				if src.Addr().Is6() {
					s, d = ctaIPv6Src, ctaIPv6Dst
				}
				ie.Bytes(s, src.Addr().AsSlice())
				ie.Bytes(d, dst.Addr().AsSlice())
				return nil
			})
			te.Nested(ctaTupleProto, func(pe *netlink.AttributeEncoder) error {
				pe.Uint8(ctaProtoNum, m.proto)
				if !m.noPorts {
					pe.Uint16(ctaProtoSrcPort, src.Port())
					pe.Uint16(ctaProtoDstPort, dst.Port())
				}
				return nil
			})
			return nil
		}
	}
	ae.Nested(ctaTupleOrig, tuple(m.src, m.dst))
	ae.Nested(ctaTupleReply, tuple(m.rsrc, m.rdst))
	status := uint32(0x8e) // seen reply, assured, confirmed, SNAT done
	if m.unreplied {
		status = 0x188 // confirmed, SNAT done, DNAT done: a SYN sent on
	}
	ae.Uint32(ctaStatus, status)
	if !m.noMrk {
		ae.Uint32(ctaMark, m.mark)
	}
	if m.counters {
		for typ, c := range map[uint16]Counter{ctaCountersOrig: m.orig, ctaCountersReply: m.reply} {
			ae.Nested(typ, func(ce *netlink.AttributeEncoder) error {
				ce.Uint64(ctaCountersPackets, c.Packets)
				ce.Uint64(ctaCountersBytes, c.Bytes)
				return nil
			})
		}
	}
	if !m.start.IsZero() {
		ae.Nested(ctaTimestamp, func(te *netlink.AttributeEncoder) error {
			te.Uint64(ctaTimestampStart, uint64(m.start.UnixNano()))
			return nil
		})
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestStatusDecodeFlow(t *testing.T) {
	start := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name   string
		msg    ctMessage
		detail Detail
		want   FlowRecord
	}{
		{
			name: "counters only: tuples are skipped",
			msg: ctMessage{proto: 6, src: mustAP("10.77.0.2:40000"), dst: mustAP("203.0.113.10:7000"),
				rsrc: mustAP("203.0.113.10:7000"), rdst: mustAP("192.0.2.2:40000"), mark: 0x1_0100,
				counters: true, orig: Counter{3, 180}, reply: Counter{2, 120}, start: start},
			detail: DetailCounters,
			want:   FlowRecord{Mark: 0x1_0100, SeenReply: true, Counted: true, Orig: Counter{3, 180}, Reply: Counter{2, 120}},
		},
		{
			name: "a connection attempt that saw no reply",
			msg: ctMessage{proto: 6, src: mustAP("10.77.0.2:40000"), dst: mustAP("203.0.113.10:7000"),
				rsrc: mustAP("203.0.113.10:7000"), rdst: mustAP("192.0.2.2:40000"), mark: 0x200, unreplied: true},
			detail: DetailCounters,
			want:   FlowRecord{Mark: 0x200},
		},
		{
			name: "tuples, NAT and timestamp",
			msg: ctMessage{proto: 6, src: mustAP("10.77.0.2:40000"), dst: mustAP("203.0.113.10:7000"),
				rsrc: mustAP("203.0.113.10:7000"), rdst: mustAP("192.0.2.2:40001"), mark: 0x200,
				counters: true, orig: Counter{3, 180}, reply: Counter{2, 120}, start: start},
			detail: DetailTuples,
			want: FlowRecord{Mark: 0x200, SeenReply: true, Counted: true, Orig: Counter{3, 180}, Reply: Counter{2, 120},
				Proto:    6,
				OrigSrc:  Endpoint{netip.MustParseAddr("10.77.0.2"), 40000, true},
				OrigDst:  Endpoint{netip.MustParseAddr("203.0.113.10"), 7000, true},
				ReplySrc: Endpoint{netip.MustParseAddr("203.0.113.10"), 7000, true},
				ReplyDst: Endpoint{netip.MustParseAddr("192.0.2.2"), 40001, true},
				Start:    start},
		},
		{
			name: "ipv6 icmp without counters or mark",
			msg: ctMessage{proto: 58, src: mustAP("[2001:db8::1]:0"), dst: mustAP("[2001:db8::2]:0"),
				rsrc: mustAP("[2001:db8::2]:0"), rdst: mustAP("[2001:db8::1]:0"), noPorts: true, noMrk: true},
			detail: DetailTuples,
			want: FlowRecord{Proto: 58, SeenReply: true,
				OrigSrc:  Endpoint{Addr: netip.MustParseAddr("2001:db8::1")},
				OrigDst:  Endpoint{Addr: netip.MustParseAddr("2001:db8::2")},
				ReplySrc: Endpoint{Addr: netip.MustParseAddr("2001:db8::2")},
				ReplyDst: Endpoint{Addr: netip.MustParseAddr("2001:db8::1")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got FlowRecord
			if err := decodeFlow(tc.msg.encode(t), tc.detail, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("decoded flow (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStatusDecodeFlowRejectsGarbage(t *testing.T) {
	// An attribute header claiming more bytes than there are.
	b := []byte{0xff, 0x00, ctaMark, 0x00, 1, 2, 3, 4}
	var rec FlowRecord
	if err := decodeFlow(b, DetailCounters, &rec); err == nil {
		t.Fatalf("decodeFlow accepted a truncated attribute: %+v", rec)
	}
	// A byte counter of 4 bytes instead of 8, nested in CTA_COUNTERS_ORIG.
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ctaCountersOrig, func(ce *netlink.AttributeEncoder) error {
		ce.Uint32(ctaCountersBytes, 1)
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeFlow(b, DetailCounters, &rec); err == nil || !strings.Contains(err.Error(), "want 8") {
		t.Fatalf("decodeFlow on a short counter: %v, want a size error", err)
	}
}
