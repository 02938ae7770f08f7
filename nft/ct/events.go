package ct

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// EventType says what happened to a flow.
type EventType uint8

const (
	// EventNew: the kernel confirmed a new flow (its first packet left
	// the last hook), with the ct mark the rules gave it by then.
	EventNew EventType = iota + 1
	// EventUpdate: an existing flow changed: its mark, its status (the
	// first reply: SeenReply), its TCP state.
	EventUpdate
	// EventDestroy: the flow is gone (timed out, closed, deleted).
	EventDestroy
	// EventLost: the kernel dropped events for this socket because its
	// receive buffer was full (recvmsg returned ENOBUFS). How many and
	// which is unknown: whoever counts from events must re-read the table.
	EventLost
)

func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	case EventLost:
		return "lost"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one conntrack event, decoded only as far as flow counting and
// reply watching need.
type Event struct {
	Type   EventType
	Family uint8 // AF_INET, AF_INET6
	ID     uint32
	Mark   uint32
	Proto  uint8      // of the original tuple
	Dst    netip.Addr // the original tuple's destination: whom the flow was opened to
	// SeenReply: a packet has travelled in the reply direction
	// (IPS_SEEN_REPLY): the far end answered.
	SeenReply bool
}

// The conntrack multicast groups NFNLGRP_CONNTRACK_NEW (1), _UPDATE (2)
// and _DESTROY (3) (uapi/linux/netfilter/nfnetlink.h), as a bind(2) group
// mask: group g is bit g-1.
const ctGroups = 0b111

const (
	ipctnlMsgCtDelete = 2        // IPCTNL_MSG_CT_DELETE
	ipsSeenReply      = 1 << 1   // IPS_SEEN_REPLY
	maxEventBatch     = 512      // events handed over at once
	eventReadBuffer   = 64 << 10 // one read; an event is a few hundred bytes
	DefaultEventSpace = 32 << 20 // the socket's receive buffer
)

// Subscribe listens to conntrack events in the handle's network
// namespace. Every event from the moment it returns is delivered on the
// channel, in the kernel's order, in batches of whatever had arrived; a
// batch belongs to the receiver. The channel is closed when ctx ends (and
// the socket is closed by then) or when reading fails for good.
//
// space is the socket's receive buffer (DefaultEventSpace if 0). It is
// where events wait while the receiver is busy; when it is full the
// kernel drops events and says so, which arrives as one EventLost. The
// kernel sends events only for flows that carry its event extension:
// with net.netfilter.nf_conntrack_events=2 (the default) only flows
// created while some listener existed do (nf_ct_ecache_ext_add in
// net/netfilter/nf_conntrack_ecache.c); with 1, every flow does.
func (ct *Conntrack) Subscribe(ctx context.Context, space int) (<-chan []Event, error) {
	if space <= 0 {
		space = DefaultEventSpace
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ct.netns, Groups: ctGroups})
	if err != nil {
		return nil, fmt.Errorf("subscribe to conntrack events: %w", err)
	}
	raw, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			// SO_RCVBUFFORCE ignores net.core.rmem_max (CAP_NET_ADMIN).
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, space)
		})
		if err == nil && serr != nil {
			err = c.SetReadBuffer(space)
		}
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("conntrack event socket: %w", err)
	}
	out := make(chan []Event, 16)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	go func() {
		defer close(out)
		defer stop()
		defer c.Close()
		buf := make([]byte, eventReadBuffer)
		for {
			batch, err := readEvents(raw, buf)
			if len(batch) > 0 {
				select {
				case out <- batch:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return // closed (ctx ended) or broken: the receiver resubscribes
			}
		}
	}()
	return out, nil
}

// rawReader is the part of syscall.RawConn readEvents uses.
type rawReader interface {
	Read(f func(fd uintptr) (done bool)) error
}

// readEvents waits for at least one event, then takes every event already
// queued, up to maxEventBatch, without waiting again.
func readEvents(raw rawReader, buf []byte) ([]Event, error) {
	var batch []Event
	var derr error
	err := raw.Read(func(fd uintptr) bool {
		for len(batch) < maxEventBatch {
			n, _, rerr := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			switch {
			case rerr == unix.EAGAIN || rerr == unix.EWOULDBLOCK:
				return len(batch) > 0 || derr != nil
			case rerr == unix.ENOBUFS:
				batch = append(batch, Event{Type: EventLost})
				continue
			case rerr == unix.EINTR:
				continue
			case rerr != nil:
				derr = rerr
				return true
			}
			batch, rerr = appendEvents(batch, buf[:n])
			if rerr != nil {
				// One undecodable message: what it said is lost.
				batch = append(batch, Event{Type: EventLost})
			}
		}
		return true
	})
	if err == nil {
		err = derr
	}
	return batch, err
}

// appendEvents decodes the ctnetlink messages in b.
func appendEvents(batch []Event, b []byte) ([]Event, error) {
	for len(b) >= unix.SizeofNlMsghdr {
		n := int(binary.NativeEndian.Uint32(b))
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return batch, fmt.Errorf("netlink message of length %d in %d bytes", n, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[4:])
		flags := binary.NativeEndian.Uint16(b[6:])
		data := b[unix.SizeofNlMsghdr:n]
		b = b[min((n+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
		if typ>>8 != uint16(netfilter.NFSubsysCTNetlink) || len(data) < 4 {
			continue
		}
		var ev Event
		switch typ & 0xff {
		case ipctnlMsgCtNew:
			ev.Type = EventUpdate
			if flags&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != 0 {
				ev.Type = EventNew
			}
		case ipctnlMsgCtDelete:
			ev.Type = EventDestroy
		default:
			continue
		}
		ev.Family = data[0]
		if err := decodeEvent(data[4:], &ev); err != nil {
			return batch, err
		}
		batch = append(batch, ev)
	}
	return batch, nil
}

// decodeEvent reads the attributes of one event (after the nfgenmsg
// header). The kernel omits CTA_MARK when the mark is 0.
func decodeEvent(b []byte, ev *Event) error {
	it := attrs{b: b}
	for it.next() {
		switch it.typ {
		case ctaID:
			ev.ID = it.u32()
		case ctaMark:
			ev.Mark = it.u32()
		case ctaStatus:
			ev.SeenReply = it.u32()&ipsSeenReply != 0
		case ctaTupleOrig:
			t := attrs{b: it.data}
			for t.next() {
				switch t.typ {
				case ctaTupleProto:
					p := attrs{b: t.data}
					for p.next() {
						if p.typ == ctaProtoNum {
							ev.Proto = p.u8()
						}
					}
					t.err = errors.Join(t.err, p.err)
				case ctaTupleIP:
					ip := attrs{b: t.data}
					for ip.next() {
						if a, ok := netip.AddrFromSlice(ip.data); ok && (ip.typ == ctaIPv4Dst || ip.typ == ctaIPv6Dst) {
							ev.Dst = a
						}
					}
					t.err = errors.Join(t.err, ip.err)
				}
			}
			it.err = t.err
		}
	}
	return it.err
}
