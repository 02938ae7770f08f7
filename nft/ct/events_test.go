package ct

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// eventMessage encodes a ctnetlink event as the kernel multicasts it.
func eventMessage(t testing.TB, msgType, flags uint16, family uint8, id, mark, status uint32, proto uint8) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Nested(ctaTupleOrig, func(te *netlink.AttributeEncoder) error {
		te.Nested(ctaTupleIP, func(ie *netlink.AttributeEncoder) error {
			ie.Bytes(ctaIPv4Src, []byte{10, 0, 0, 1})
			ie.Bytes(ctaIPv4Dst, []byte{10, 0, 0, 2})
			return nil
		})
		te.Nested(ctaTupleProto, func(pe *netlink.AttributeEncoder) error {
			pe.Uint8(ctaProtoNum, proto)
			return nil
		})
		return nil
	})
	ae.Uint32(ctaStatus, status)
	if mark != 0 {
		ae.Uint32(ctaMark, mark)
	}
	ae.Uint32(ctaID, id)
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte{family, 0, 0, 0}, attrs...)
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(b, uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(b[4:], 1<<8|msgType) // NFNL_SUBSYS_CTNETLINK
	binary.NativeEndian.PutUint16(b[6:], flags)
	return append(b, body...)
}

func TestAppendEvents(t *testing.T) {
	var b []byte
	b = append(b, eventMessage(t, ipctnlMsgCtNew, unix.NLM_F_CREATE|unix.NLM_F_EXCL, unix.AF_INET, 7, 0x100, 0x8, 6)...)
	b = append(b, eventMessage(t, ipctnlMsgCtNew, 0, unix.AF_INET, 7, 0x100, 0x8|ipsSeenReply, 6)...)
	b = append(b, eventMessage(t, ipctnlMsgCtDelete, 0, unix.AF_INET6, 9, 0, 0, 17)...)
	got, err := appendEvents(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddr("10.0.0.2")
	want := []Event{
		{Type: EventNew, Family: unix.AF_INET, ID: 7, Mark: 0x100, Proto: 6, Dst: dst},
		{Type: EventUpdate, Family: unix.AF_INET, ID: 7, Mark: 0x100, Proto: 6, SeenReply: true, Dst: dst},
		{Type: EventDestroy, Family: unix.AF_INET6, ID: 9, Proto: 17, Dst: dst},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if _, err := appendEvents(nil, b[:len(b)-3]); err == nil {
		t.Error("a truncated message decoded without error")
	}
}

// FuzzAppendEvents: no message on the event socket panics the decoder;
// every event it returns came from a ctnetlink new or delete message, and
// where the dump decoder also reads that message the two agree on the
// flow's id, mark and destination.
func FuzzAppendEvents(f *testing.F) {
	var b []byte
	b = append(b, eventMessage(f, ipctnlMsgCtNew, unix.NLM_F_CREATE|unix.NLM_F_EXCL, unix.AF_INET, 7, 0x100, 0x8, 6)...)
	b = append(b, eventMessage(f, ipctnlMsgCtNew, 0, unix.AF_INET, 7, 0x100, 0x8|ipsSeenReply, 6)...)
	b = append(b, eventMessage(f, ipctnlMsgCtDelete, 0, unix.AF_INET6, 9, 0, 0, 17)...)
	f.Add(b)
	for _, body := range seedFlows(f) {
		f.Add(nlBatch(0, unix.AF_INET, body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		events, err := appendEvents(nil, b)
		if err != nil {
			return
		}
		// The messages appendEvents read, framed the same way.
		var ct [][]byte
		for len(b) >= unix.SizeofNlMsghdr {
			n := int(binary.NativeEndian.Uint32(b))
			typ := binary.NativeEndian.Uint16(b[4:])
			data := b[unix.SizeofNlMsghdr:n]
			b = b[min((n+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
			if typ>>8 == 1 && (typ&0xff == ipctnlMsgCtNew || typ&0xff == ipctnlMsgCtDelete) && len(data) >= 4 {
				ct = append(ct, data)
			}
		}
		if len(events) != len(ct) {
			t.Fatalf("%d events from %d ctnetlink messages", len(events), len(ct))
		}
		for i, ev := range events {
			if ev.Type != EventNew && ev.Type != EventUpdate && ev.Type != EventDestroy {
				t.Fatalf("event %d: type %v", i, ev.Type)
			}
			if ev.Family != ct[i][0] {
				t.Fatalf("event %d: family %d, message says %d", i, ev.Family, ct[i][0])
			}
			var rec FlowRecord
			if decodeFlow(ct[i][4:], DetailTuples, &rec) != nil {
				continue
			}
			if ev.ID != rec.ID || ev.Mark != rec.Mark || ev.Dst != rec.OrigDst.Addr {
				t.Fatalf("event %d: id %d mark %#x dst %v; the dump decoder read id %d mark %#x dst %v",
					i, ev.ID, ev.Mark, ev.Dst, rec.ID, rec.Mark, rec.OrigDst.Addr)
			}
		}
	})
}
