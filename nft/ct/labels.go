package ct

import (
	"errors"
	"fmt"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// FlushLabel deletes the flows of one address family (unix.AF_INET or
// unix.AF_INET6) with (ct mark & mask) == mark that carry ct label bit: a
// policy's flows on one link, and no other flow on it. It returns how
// many flows it deleted.
func (ct *Conntrack) FlushLabel(mark, mask uint32, bit int, family uint8) (int, error) {
	return ct.deleteWhere(markFilter(mark, mask, family), mark, mask, family, func(f *conntrack.Flow) bool { return HasLabel(f.Labels, bit) })
}

// FlushMarkExceptLabels deletes the flows of one address family with
// (ct mark & mask) == mark that carry none of the ct label bits keep: a
// link's flows, but for those of the policies told apart by these bits.
// It returns how many flows it deleted.
func (ct *Conntrack) FlushMarkExceptLabels(mark, mask uint32, family uint8, keep []int) (int, error) {
	return ct.deleteWhere(markFilter(mark, mask, family), mark, mask, family, func(f *conntrack.Flow) bool { return !HasAnyLabel(f.Labels, keep) })
}

// FlushUnreplied deletes the flows of one address family with
// (ct mark & mask) == mark that never saw a reply (no IPS_SEEN_REPLY)
// and carry none of the ct label bits keep: a link's connection attempts
// that its death left unanswered, so that the client's next try (a SYN
// retransmit, the next datagram) is classified again onto a live link.
// The flows that were answered stay. It returns how many it deleted.
//
// A flow answered between the dump and its deletion is deleted too; its
// link is down, so that is rare, and costs that one flow a reconnect.
//
// The kernel (5.15 and later) filters the dump by status as well, so the
// link's answered flows, which may be many, never cross into user space;
// an older kernel ignores that part of the filter and sends them all,
// and they are told apart here.
func (ct *Conntrack) FlushUnreplied(mark, mask uint32, family uint8, keep []int) (int, error) {
	unanswered := markFilter(mark, mask, family).Status(0).StatusMask(uint32(conntrack.StatusSeenReply))
	return ct.deleteWhere(unanswered, mark, mask, family, func(f *conntrack.Flow) bool {
		return !f.Status.SeenReply() && !HasAnyLabel(f.Labels, keep)
	})
}

func markFilter(mark, mask uint32, family uint8) conntrack.Filter {
	return conntrack.NewFilter().Family(netfilter.ProtoFamily(family)).Mark(mark).MarkMask(mask)
}

// deleteWhere deletes the flows the kernel's dump by filter sends (those
// of one family and mark, at least) that del accepts. ctnetlink filters a
// dump by mark (and status) but not by label, so the rest is checked here.
func (ct *Conntrack) deleteWhere(filter conntrack.Filter, mark, mask uint32, family uint8, del func(f *conntrack.Flow) bool) (int, error) {
	c, err := ct.requests()
	if err != nil {
		return 0, err
	}
	var flows []conntrack.Flow
	err = RetryInterrupted(func() error {
		var derr error
		flows, derr = c.DumpFilter(filter, nil)
		return derr
	})
	if err != nil {
		return 0, fmt.Errorf("conntrack dump family %d mark %#x/%#x: %w", family, mark, mask, err)
	}
	n := 0
	for i := range flows {
		f := flows[i]
		if !del(&f) {
			continue
		}
		if err := c.Delete(f); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // ended meanwhile
			}
			return n, fmt.Errorf("conntrack delete: %w", err)
		}
		n++
	}
	return n, nil
}

// HasLabel says whether ct label bit is set in labels, as the kernel lays
// the bitmap out (bit i is bit i%8 of byte i/8 on little-endian hosts).
func HasLabel(labels []byte, bit int) bool {
	return bit >= 0 && bit/8 < len(labels) && labels[bit/8]&(1<<(bit%8)) != 0
}

// HasAnyLabel says whether any of the ct label bits is set in labels.
func HasAnyLabel(labels []byte, bits []int) bool {
	for _, bit := range bits {
		if HasLabel(labels, bit) {
			return true
		}
	}
	return false
}

// FlushMarkFamily is FlushMark for one address family (unix.AF_INET or
// unix.AF_INET6): a link whose IPv6 failed loses its IPv6 flows only.
func (ct *Conntrack) FlushMarkFamily(mark, mask uint32, family uint8) error {
	c, err := ct.requests()
	if err != nil {
		return err
	}
	f := conntrack.NewFilter().Family(netfilter.ProtoFamily(family)).Mark(mark).MarkMask(mask)
	if err := c.FlushFilter(f); err != nil {
		return fmt.Errorf("conntrack flush family %d mark %#x/%#x: %w", family, mark, mask, err)
	}
	return nil
}
