package nft

import (
	"errors"

	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// elementEvents follows element changes of flowpin's table's sets and
// sends the name of each set that changed: an operator's `nft delete
// element` or `nft flush set` on a file set lets flows escape its rule.
// The library's monitor decodes an element notification's elements but
// drops the table and set they belong to, and dnsmasq adds elements to
// domain sets all day: without the set's name, every DNS answer would
// have the daemon list every file set. It runs until c is closed; an
// overrun socket (a 100k-element set written at once) is a lost event.
func elementEvents(c *mdnetlink.Conn, send func(TableEvent)) {
	for {
		msgs, err := c.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				send(TableEvent{Lost: true, What: Subscription})
				continue
			}
			return
		}
		seen := map[string]bool{}
		for _, m := range msgs {
			t := m.Header.Type
			if t>>8 != unix.NFNL_SUBSYS_NFTABLES || (t&0xff != unix.NFT_MSG_NEWSETELEM && t&0xff != unix.NFT_MSG_DELSETELEM) || len(m.Data) < 4 {
				continue
			}
			ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				continue
			}
			var table, set string
			for ad.Next() {
				switch ad.Type() {
				case unix.NFTA_SET_ELEM_LIST_TABLE:
					table = ad.String()
				case unix.NFTA_SET_ELEM_LIST_SET:
					set = ad.String()
				}
			}
			if table == TableName && set != "" && !seen[set] {
				seen[set] = true
				send(TableEvent{What: "elements of set " + set + " changed", Set: set})
			}
		}
	}
}

// dialElementEvents joins the nftables notification group.
func dialElementEvents() (*mdnetlink.Conn, error) {
	c, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, err
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
