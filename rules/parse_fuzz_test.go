package rules

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// answerMessage is an RTM_NEWROUTE answer as the kernel sends it for a
// FIBMatch query that matched a two-leg multipath route in table 102.
func answerMessage() []byte {
	rt := nl.NewRtMsg()
	rt.Family = unix.AF_INET
	rt.Table = unix.RT_TABLE_UNSPEC
	rt.Type = unix.RTN_UNICAST
	rt.Protocol = unix.RTPROT_STATIC
	rt.Dst_len = 24
	b := rt.Serialize()
	add := func(a *nl.RtAttr) { b = append(b, a.Serialize()...) }
	add(nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(102)))
	add(nl.NewRtAttr(unix.RTA_DST, []byte{203, 0, 113, 0}))
	add(nl.NewRtAttr(unix.RTA_PREFSRC, []byte{192, 0, 2, 2}))
	mp := nl.NewRtAttr(unix.RTA_MULTIPATH, nil)
	for i, gw := range [][]byte{{192, 0, 2, 1}, {198, 51, 100, 1}} {
		nh := &nl.RtNexthop{RtNexthop: unix.RtNexthop{Hops: uint8(2 * i), Ifindex: int32(3 + i)}}
		nh.Children = append(nh.Children, nl.NewRtAttr(unix.RTA_GATEWAY, gw))
		mp.AddChild(nh)
	}
	add(mp)
	return b
}

var answerNames = map[int]string{3: "wan1", 4: "wan2"}

func TestParseAnswer(t *testing.T) {
	got, err := parseAnswer(answerMessage(), answerNames)
	if err != nil {
		t.Fatal(err)
	}
	want := Answer{
		Type: unix.RTN_UNICAST, Table: 102, Protocol: unix.RTPROT_STATIC,
		Dst:     netip.MustParsePrefix("203.0.113.0/24"),
		PrefSrc: netip.MustParseAddr("192.0.2.2"),
		Nexthops: []Nexthop{
			{Dev: "wan1", Gw: netip.MustParseAddr("192.0.2.1"), Weight: 1},
			{Dev: "wan2", Gw: netip.MustParseAddr("198.51.100.1"), Weight: 3},
		},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("answer (-want +got):\n%s", d)
	}
	for _, short := range [][]byte{nil, answerMessage()[:unix.SizeofRtMsg-1]} {
		if _, err := parseAnswer(short, answerNames); err == nil {
			t.Errorf("%d bytes parsed without error", len(short))
		}
	}
}

// FuzzParseAnswer: no route answer panics the decoder, and what it returns
// is well formed: a valid destination prefix, weights the kernel can
// express (1..256).
func FuzzParseAnswer(f *testing.F) {
	f.Add(answerMessage())
	rt := nl.NewRtMsg()
	rt.Family = unix.AF_INET6
	f.Add(append(rt.Serialize(), nl.NewRtAttr(unix.RTA_GATEWAY, netip.MustParseAddr("fe80::1").AsSlice()).Serialize()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAnswer(b, answerNames)
		if err != nil {
			return
		}
		if !a.Dst.IsValid() {
			t.Fatalf("destination %v is not a prefix", a.Dst)
		}
		for _, nh := range a.Nexthops {
			if nh.Weight < 1 || nh.Weight > 256 {
				t.Fatalf("nexthop weight %d", nh.Weight)
			}
		}
	})
}
