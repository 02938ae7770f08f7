package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables"
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
}

// UseTable names the table of the use run by process pid.
func UseTable(pid int) string { return UseTablePrefix + strconv.Itoa(pid) }

func (u Use) exprs() []expr.Any {
	id := make([]byte, 8)
	// The cgroup id is compared in host byte order.
	binary.NativeEndian.PutUint64(id, u.CgroupID)
	return join([]expr.Any{
		&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: u.Level, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: id},
	}, setMarkBits(false, u.Mask, u.Mark), setMarkBits(true, u.Mask, u.Mark))
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
	nc.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: u.exprs()})
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
