package rules

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// An IPv6 address in duplicate address detection is listed as tentative,
// one that failed it (another host on the link answered for it) as
// failed, one added with nodad as neither; all three are in Addrs.
func TestInterfacesTentativeAndDADFailed(t *testing.T) {
	ns := testNS(t)
	ipn(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ipn(t, ns, "link", "set", "v0", "up")
	ipn(t, ns, "link", "set", "v1", "up")
	// v1 has 2001:db8::2 already: v0's detection of it gets an answer.
	ipn(t, ns, "addr", "add", "2001:db8::2/64", "dev", "v1", "nodad")
	ipn(t, ns, "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad")
	ipn(t, ns, "addr", "add", "2001:db8::2/64", "dev", "v0")
	ipn(t, ns, "addr", "add", "2001:db8::3/64", "dev", "v0")
	k := openAt(t, ns)
	read := func() Iface {
		t.Helper()
		ifs, err := k.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		return ifs["v0"]
	}
	two, three := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3")
	// DAD sends its first probe after a random delay and waits a second
	// for an answer: ::3 is still tentative now.
	if v := read(); !slices.Contains(v.Tentative, three) || len(v.Addrs) != 3 {
		t.Errorf("just added: %+v, want 2001:db8::3 tentative among 3 addresses", v)
	}
	deadline := time.Now().Add(5 * time.Second)
	var v Iface
	for {
		v = read()
		if slices.Equal(v.DADFailed, []netip.Addr{two}) && len(v.Tentative) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Equal(v.DADFailed, []netip.Addr{two}) || len(v.Tentative) != 0 || len(v.Addrs) != 3 {
		t.Errorf("after detection: %+v, want 2001:db8::2 failed, none tentative, 3 addresses", v)
	}
	if w := read(); slices.Contains(w.DADFailed, netip.MustParseAddr("2001:db8::1")) {
		t.Errorf("a nodad address counted as failed: %+v", w)
	}
}
