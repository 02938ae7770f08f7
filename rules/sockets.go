package rules

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// SocketOwners asks the kernel, with sock_diag(7), who owns a TCP socket
// in the caller's network namespace.
type SocketOwners struct{}

// ClientUID returns the uid that owns the client's end of the TCP
// connection client->server, when that end is a socket in this network
// namespace (a local user's, whatever address it used).
func (SocketOwners) ClientUID(server, client netip.AddrPort) (uint32, bool) {
	families := []uint8{unix.AF_INET6}
	if client.Addr().Is4() {
		// An IPv4 client's socket is AF_INET, or AF_INET6 if it
		// connected to a v4-mapped address.
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, f := range families {
		s, err := diagLookup(f, client, server)
		if err == nil && s.isClientOf(server, client) {
			return s.uid, true
		}
	}
	return 0, false
}

// diagSocket is what this package reads of a struct inet_diag_msg
// (linux/inet_diag.h).
type diagSocket struct {
	state    uint8
	src, dst netip.AddrPort
	uid      uint32
}

// isClientOf tells whether s, the kernel's answer to a lookup of the
// client's side of the connection client->server, really is that socket.
// The kernel falls back to a listening socket on the client's port when
// no connection matches, and reports uid 0 for a TIME_WAIT socket:
// neither may pass for a client.
func (s diagSocket) isClientOf(server, client netip.AddrPort) bool {
	switch s.state {
	case netlink.TCP_ESTABLISHED, netlink.TCP_FIN_WAIT1, netlink.TCP_FIN_WAIT2:
	default:
		return false
	}
	return s.src == client && s.dst == server
}

// diagReq is a struct inet_diag_req_v2 (linux/inet_diag.h) asking for
// the TCP socket whose own end is src and far end dst. Sent without
// NLM_F_DUMP, the kernel looks it up in its hash tables
// (inet_diag_find_one_icsk); netlink.SocketGet sends a dump instead,
// which walks every bucket of the established table: about 1.5 ms a
// query, more than the connection it judges is worth.
type diagReq struct {
	family   uint8
	src, dst netip.AddrPort
}

const (
	sizeofDiagReq = 56
	sizeofDiagMsg = 72
)

func (r *diagReq) Len() int { return sizeofDiagReq }

func (r *diagReq) Serialize() []byte {
	b := make([]byte, sizeofDiagReq)
	b[0], b[1] = r.family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], ^uint32(0)) // any state: isClientOf judges
	binary.BigEndian.PutUint16(b[8:], r.src.Port())
	binary.BigEndian.PutUint16(b[10:], r.dst.Port())
	src, dst := r.src.Addr(), r.dst.Addr()
	if r.family == unix.AF_INET6 {
		src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	}
	copy(b[12:28], src.AsSlice())
	copy(b[28:44], dst.AsSlice())
	binary.NativeEndian.PutUint32(b[48:], nl.TCPDIAG_NOCOOKIE)
	binary.NativeEndian.PutUint32(b[52:], nl.TCPDIAG_NOCOOKIE)
	return b
}

func diagLookup(family uint8, src, dst netip.AddrPort) (diagSocket, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, 0)
	req.AddData(&diagReq{family: family, src: src, dst: dst})
	msgs, err := req.Execute(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY)
	if err != nil {
		return diagSocket{}, err
	}
	if len(msgs) != 1 {
		return diagSocket{}, fmt.Errorf("sock_diag: %d answers to a lookup of one socket", len(msgs))
	}
	return parseDiagMsg(msgs[0])
}

func parseDiagMsg(b []byte) (diagSocket, error) {
	if len(b) < sizeofDiagMsg {
		return diagSocket{}, fmt.Errorf("sock_diag: short answer (%d bytes)", len(b))
	}
	addr := func(a []byte) netip.Addr {
		if b[0] == unix.AF_INET {
			return netip.AddrFrom4([4]byte(a[:4]))
		}
		return netip.AddrFrom16([16]byte(a)).Unmap()
	}
	return diagSocket{
		state: b[1],
		src:   netip.AddrPortFrom(addr(b[8:24]), binary.BigEndian.Uint16(b[4:])),
		dst:   netip.AddrPortFrom(addr(b[24:40]), binary.BigEndian.Uint16(b[6:])),
		uid:   binary.NativeEndian.Uint32(b[64:]),
	}, nil
}
