package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// kernelElem is one element of a set as the kernel lists it: its key,
// and whether it ends an interval.
type kernelElem struct {
	key netip.Addr
	end bool
}

// dumpBuffer is what each read of an element dump takes. The kernel
// fills a dump's next message up to the largest read the socket has
// seen, at most 32 KiB (netlink_dump, net/netlink/af_netlink.c), and
// an interval set's dump walks the tree from its first element again
// for each message (nft_rbtree_walk): with the page-sized reads of the
// netlink library, a 100k-element set takes over a thousand messages
// and walks the tree as often.
const dumpBuffer = 32 << 10

// listElements lists the elements of the table's set name, keys and
// interval ends only; ok is false for a missing set. The library's
// GetSetElements decodes every attribute of every element into a
// SetElement, and reads the dump a page at a time (dumpBuffer).
func listElements(name string) (es []kernelElem, ok bool, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, false, fmt.Errorf("netlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, false, fmt.Errorf("netlink: %w", err)
	}
	ae := mdnetlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, name)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, false, err
	}
	const seq = 1
	req := mdnetlink.Message{
		Header: mdnetlink.Header{
			Type:     mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags:    mdnetlink.Request | mdnetlink.Dump,
			Sequence: seq,
		},
		// nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	req.Header.Length = uint32(unix.NLMSG_HDRLEN + len(req.Data))
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, false, err
	}
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, false, fmt.Errorf("elements of set %s: %w", name, err)
	}
	buf := make([]byte, dumpBuffer)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, false, fmt.Errorf("elements of set %s: %w", name, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, false, fmt.Errorf("elements of set %s: %w", name, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return es, true, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, false, fmt.Errorf("elements of set %s: short error", name)
				}
				errno := -int32(binary.NativeEndian.Uint32(m.Data[:4]))
				if errno == 0 {
					continue
				}
				if unix.Errno(errno) == unix.ENOENT {
					return nil, false, nil
				}
				return nil, false, fmt.Errorf("elements of set %s: %w", name, unix.Errno(errno))
			}
			if es, err = appendElems(es, m.Data); err != nil {
				return nil, false, fmt.Errorf("elements of set %s: %w", name, err)
			}
		}
	}
}

// appendElems adds the elements of one NFT_MSG_NEWSETELEM message.
func appendElems(es []kernelElem, data []byte) ([]kernelElem, error) {
	if len(data) < 4 {
		return es, nil
	}
	ad, err := mdnetlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return es, err
	}
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *mdnetlink.AttributeDecoder) error {
			for list.Next() {
				var e kernelElem
				list.Nested(func(el *mdnetlink.AttributeDecoder) error {
					el.ByteOrder = binary.BigEndian
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_FLAGS:
							e.end = el.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
						case unix.NFTA_SET_ELEM_KEY:
							el.Nested(func(k *mdnetlink.AttributeDecoder) error {
								for k.Next() {
									if k.Type() == unix.NFTA_DATA_VALUE {
										e.key, _ = netip.AddrFromSlice(k.Bytes())
									}
								}
								return nil
							})
						}
					}
					return nil
				})
				es = append(es, e)
			}
			return nil
		})
	}
	return es, ad.Err()
}
