package daemon

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"flowpin/lb/ctl"
)

// client is who is at the other end of a connection, as far as the
// kernel can tell.
type client struct {
	// key is what the per-client connection cap counts: the user when
	// the kernel names one ("uid 1000"), else the address ("192.0.2.7",
	// or the /64 of an IPv6 address, which one host usually holds
	// whole).
	key string
	// uid is the user who owns the client's socket, when known is true:
	// always on a unix socket (SO_PEERCRED), and on TCP when the
	// client's socket is in this network namespace.
	uid   uint32
	known bool
}

func (c client) root() bool { return c.known && c.uid == 0 }

func userClient(uid uint32) client {
	return client{key: "uid " + strconv.FormatUint(uint64(uid), 10), uid: uid, known: true}
}

func addrClient(a netip.Addr) client {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return client{key: p.String()}
	}
	return client{key: a.String()}
}

// kernelClient asks the kernel who connected: SO_PEERCRED on a unix
// socket; on TCP, the owner of the client's socket when that socket is
// in this network namespace (a local user, whatever address it used),
// found with sock_diag(7); else the client's address.
func kernelClient(c net.Conn) client {
	switch c := c.(type) {
	case *net.UnixConn:
		if cred, err := ctl.PeerCred(c); err == nil {
			return userClient(cred.Uid)
		}
		return client{key: "unix"}
	case *net.TCPConn:
		local, lok := c.LocalAddr().(*net.TCPAddr)
		remote, rok := c.RemoteAddr().(*net.TCPAddr)
		if !lok || !rok {
			return client{key: c.RemoteAddr().String()}
		}
		l, r := unmap(local.AddrPort()), unmap(remote.AddrPort())
		if uid, ok := localOwner(l, r); ok {
			return userClient(uid)
		}
		return addrClient(r.Addr())
	}
	return client{key: c.RemoteAddr().String()}
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// localOwner finds the client's side of the TCP connection local<-remote
// in this network namespace and returns the uid that owns it.
func localOwner(local, remote netip.AddrPort) (uint32, bool) {
	families := []uint8{unix.AF_INET6}
	if remote.Addr().Is4() {
		// An IPv4 client's socket is AF_INET, or AF_INET6 if it
		// connected to a v4-mapped address.
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, f := range families {
		s, err := diagLookup(f, remote, local)
		if err == nil && s.isClientOf(local, remote) {
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
// client's side of the connection local<-remote, really is that socket.
// The kernel falls back to a listening socket on the client's port when
// no connection matches, and reports uid 0 for a TIME_WAIT socket:
// neither may pass for a client.
func (s diagSocket) isClientOf(local, remote netip.AddrPort) bool {
	switch s.state {
	case netlink.TCP_ESTABLISHED, netlink.TCP_FIN_WAIT1, netlink.TCP_FIN_WAIT2:
	default:
		return false
	}
	return s.src == remote && s.dst == local
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

// mayReadStatus is the socket's rule for reading the status, for a client
// the kernel has named: root, or a member of group flowpin (as the user
// database says; the socket file is 0660 root:flowpin), or only root when
// that group does not exist.
func mayReadStatus(c client) bool {
	if !c.known {
		return false
	}
	if c.uid == 0 {
		return true
	}
	g, err := user.LookupGroup(ctl.GroupName)
	if err != nil {
		return false
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(c.uid), 10))
	if err != nil {
		return false
	}
	gids, err := u.GroupIds()
	if err != nil {
		// The primary group at least is known.
		gids = []string{u.Gid}
	}
	return slices.Contains(gids, g.Gid)
}
