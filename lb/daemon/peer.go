package daemon

import (
	"net"
	"net/netip"
	"os/user"
	"slices"
	"strconv"

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
// as owners find it; else the client's address.
func kernelClient(owners SocketOwners) func(net.Conn) client {
	return func(c net.Conn) client {
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
			if uid, ok := owners.ClientUID(l, r); ok {
				return userClient(uid)
			}
			return addrClient(r.Addr())
		}
		return client{key: c.RemoteAddr().String()}
	}
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
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
