package ct

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Tuple is one direction of a flow as conntrack keys it.
type Tuple struct {
	Proto        uint8
	Src, Dst     netip.Addr
	Sport, Dport uint16
}

func (t Tuple) String() string {
	return fmt.Sprintf("%d %s:%d -> %s:%d", t.Proto, t.Src, t.Sport, t.Dst, t.Dport)
}

// Flow is the conntrack entry a packet belongs to.
type Flow struct {
	Orig, Reply Tuple
	Mark        uint32
	// IsReply: the packet asked about travels in the reply direction.
	IsReply bool
}

// requests returns the handle for single requests (get, flush), opened
// in the same network namespace as the dump sockets.
func (ct *Conntrack) requests() (*conntrack.Conn, error) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.req == nil {
		c, err := conntrack.Dial(&netlink.Config{NetNS: ct.netns})
		if err != nil {
			return nil, fmt.Errorf("open conntrack: %w", err)
		}
		ct.req = c
	}
	return ct.req, nil
}

// FlushMark deletes every flow with (ct mark & mask) == mark, in the
// kernel, in one request: no other flow is touched.
func (ct *Conntrack) FlushMark(mark, mask uint32) error {
	c, err := ct.requests()
	if err != nil {
		return err
	}
	if err := c.FlushFilter(conntrack.NewFilter().Mark(mark).MarkMask(mask)); err != nil {
		return fmt.Errorf("conntrack flush mark %#x/%#x: %w", mark, mask, err)
	}
	return nil
}

// Lookup finds the conntrack entry that t belongs to, in either direction
// (the kernel hashes both tuples of every entry). No entry is (nil, nil).
func (ct *Conntrack) Lookup(t Tuple) (*Flow, error) {
	c, err := ct.requests()
	if err != nil {
		return nil, err
	}
	q := conntrack.Flow{}
	q.TupleOrig.IP.SourceAddress = t.Src
	q.TupleOrig.IP.DestinationAddress = t.Dst
	q.TupleOrig.Proto.Protocol = t.Proto
	q.TupleOrig.Proto.SourcePort = t.Sport
	q.TupleOrig.Proto.DestinationPort = t.Dport
	f, err := c.Get(q)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("conntrack get %s: %w", t, err)
	}
	conv := func(ct conntrack.Tuple) Tuple {
		return Tuple{Proto: ct.Proto.Protocol, Src: ct.IP.SourceAddress, Dst: ct.IP.DestinationAddress,
			Sport: ct.Proto.SourcePort, Dport: ct.Proto.DestinationPort}
	}
	out := &Flow{Orig: conv(f.TupleOrig), Reply: conv(f.TupleReply), Mark: f.Mark}
	out.IsReply = out.Orig != t
	return out, nil
}
