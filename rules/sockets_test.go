package rules

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
)

func unmapped(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// The kernel names the local user behind a TCP connection, whatever
// loopback address it comes from, and over a dual-stack listener; none
// for a connection that is not there.
func TestSocketOwnersClientUID(t *testing.T) {
	uid := uint32(os.Geteuid())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln6, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	port6 := ln6.Addr().(*net.TCPAddr).Port
	for _, c := range []struct {
		from, to string
		ln       net.Listener
	}{
		{"127.0.0.1", ln.Addr().String(), ln},
		{"127.0.0.7", ln.Addr().String(), ln},
		{"::1", fmt.Sprintf("[::1]:%d", port6), ln6},
		// An IPv4 client of a dual-stack listener.
		{"127.0.0.7", fmt.Sprintf("127.0.0.1:%d", port6), ln6},
	} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.from)}}
		cl, err := d.Dial("tcp", c.to)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		server, client := unmapped(s.LocalAddr()), unmapped(s.RemoteAddr())
		if got, ok := (SocketOwners{}).ClientUID(server, client); !ok || got != uid {
			t.Errorf("TCP from %s: %d %v, want %d", c.from, got, ok, uid)
		}
		cl.Close()
		s.Close()
	}
	none := netip.MustParseAddrPort("127.0.0.9:9")
	if got, ok := (SocketOwners{}).ClientUID(unmapped(ln.Addr()), none); ok {
		t.Errorf("no such connection: uid %d", got)
	}
}

// Only the client's end of this very connection is believed.
func TestClientEnd(t *testing.T) {
	server := netip.MustParseAddrPort("10.77.0.1:9108")
	client := netip.MustParseAddrPort("10.77.0.1:40000")
	sock := func(state uint8, src, dst string) diagSocket {
		return diagSocket{state: state, src: netip.MustParseAddrPort(src), dst: netip.MustParseAddrPort(dst)}
	}
	for _, c := range []struct {
		name string
		s    diagSocket
		want bool
	}{
		{"the client's end", sock(netlink.TCP_ESTABLISHED, "10.77.0.1:40000", "10.77.0.1:9108"), true},
		{"closing", sock(netlink.TCP_FIN_WAIT2, "10.77.0.1:40000", "10.77.0.1:9108"), true},
		{"our own end", sock(netlink.TCP_ESTABLISHED, "10.77.0.1:9108", "10.77.0.1:40000"), false},
		{"same ports, other address", sock(netlink.TCP_ESTABLISHED, "127.0.0.1:40000", "127.0.0.1:9108"), false},
		{"a listener on the client's port", sock(netlink.TCP_LISTEN, "0.0.0.0:40000", "0.0.0.0:0"), false},
		{"TIME_WAIT, whose uid reads 0", sock(netlink.TCP_TIME_WAIT, "10.77.0.1:40000", "10.77.0.1:9108"), false},
	} {
		if got := c.s.isClientOf(server, client); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
