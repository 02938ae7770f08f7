package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// UseTablePrefix names the tables of `flowpin use`: one per running
// command (flowpin_use_<pid>), apart from the owned table, so that an
// apply or a daemon's resync, which rebuild that table, never touch it.
const UseTablePrefix = "flowpin_use_"

// UsePriority runs the use chain just before flowpin's output chain
// (mangle): the mark it sets is "foreign" there and left alone.
var UsePriority = nftables.ChainPriorityRef(*nftables.ChainPriorityMangle - 1)

// Use is one `flowpin use`: the sockets of one cgroup v2 leave by a link.
type Use struct {
	// Table is its own table's name.
	Table string
	// CgroupID is the cgroup's id (its directory's inode number) and
	// Level its depth under the cgroup v2 root: `socket cgroupv2 level N`
	// compares the socket's ancestor at that depth.
	CgroupID uint64
	Level    uint32
	Mask     uint32
	Mark     uint32
	// Unreachable4 and Unreachable6: the link carries no IPv4 (IPv6)
	// now. Its mark would fall through to the rules after the link's
	// and leave by another link, so the command's packets of that family
	// are refused instead (see rules). Packets to this host's own
	// addresses (routed by lo, where no mark matters) still pass.
	Unreachable4, Unreachable6 bool
}

// UseTable names the table of the use run by process pid.
func UseTable(pid int) string { return UseTablePrefix + strconv.Itoa(pid) }

// inCgroup matches the packets of the use's cgroup's sockets.
func (u Use) inCgroup() []expr.Any {
	id := make([]byte, 8)
	// The cgroup id is compared in host byte order.
	binary.NativeEndian.PutUint64(id, u.CgroupID)
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: u.Level, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: id},
	}
}

// rules are the use chain's rules, in order: the refusals of the
// families the link cannot carry, then the mark. A TCP connect is refused
// with a reset, which fails it at once (ECONNREFUSED): an ICMP error
// arrives while connect still holds the socket and only counts as a soft
// error there, so the connect would fail only with the SYN's
// retransmission a second later (tcp_v4_err, net/ipv4/tcp_ipv4.c).
// Everything else is dropped, so the send fails (EPERM), with ICMP
// administratively prohibited, which a connected UDP socket then reports
// too (EHOSTUNREACH, or EACCES for IPv6), where "no route" would be
// ignored as transient.
func (u Use) rules() [][]expr.Any {
	var out [][]expr.Any
	for _, f := range []struct {
		refuse bool
		proto  byte
	}{{u.Unreachable4, unix.NFPROTO_IPV4}, {u.Unreachable6, unix.NFPROTO_IPV6}} {
		if !f.refuse {
			continue
		}
		family := join(u.inCgroup(), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.proto}},
			&expr.Meta{Key: expr.MetaKeyOIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_LOOPBACK)},
		})
		// The counters show what was refused. Without one, nft 1.0.6
		// lists "meta nfproto ipv6 ... meta l4proto tcp reject with tcp
		// reset" without its nfproto, as if it refused both families.
		out = append(out,
			// ... meta l4proto tcp counter reject with tcp reset
			join(family, []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Counter{},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
			}),
			// ... counter reject with icmpx admin-prohibited
			join(family, []expr.Any{&expr.Counter{}, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}),
		)
	}
	return append(out, join(u.inCgroup(), setMarkBits(false, u.Mask, u.Mark), setMarkBits(true, u.Mask, u.Mark)))
}

// AddUse creates the use's table in one transaction.
func (c *Conn) AddUse(u Use) error {
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := nc.AddTable(&nftables.Table{Name: u.Table, Family: nftables.TableFamilyINet})
	ch := nc.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: UsePriority})
	for _, exprs := range u.rules() {
		nc.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	c.Writes++
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("add table inet %s: %w", u.Table, err)
	}
	return nil
}

// RemoveUse deletes one use's table; a missing one is not an error.
func (c *Conn) RemoveUse(name string) error {
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	nc.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	c.Writes++
	if err := nc.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete table inet %s: %w", name, err)
	}
	return nil
}

// UseTables lists the tables of running (or crashed) uses.
func (c *Conn) UseTables() ([]string, error) {
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	ts, err := nc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []string
	for _, t := range ts {
		if strings.HasPrefix(t.Name, UseTablePrefix) {
			out = append(out, t.Name)
		}
	}
	return out, nil
}

// RemoveUses deletes every use's table (down).
func (c *Conn) RemoveUses() (bool, error) {
	names, err := c.UseTables()
	if err != nil {
		return false, err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, c.RemoveUse(n))
	}
	return len(names) > 0, errors.Join(errs...)
}
