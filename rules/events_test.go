package rules

import (
	"net"
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func linkUpdate(typ uint16, name string, flags net.Flags, ifiFlags uint32) netlink.LinkUpdate {
	u := netlink.LinkUpdate{Link: &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Flags: flags}}}
	u.Header.Type = typ
	u.IfInfomsg = nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Flags: ifiFlags}}
	return u
}

func TestLinkEvent(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    netlink.LinkUpdate
		want Event
	}{
		{"up with carrier", linkUpdate(unix.RTM_NEWLINK, "wan1", net.FlagUp, unix.IFF_UP|unix.IFF_LOWER_UP), Event{Kind: EventLink, Iface: "wan1", Up: true}},
		{"no carrier", linkUpdate(unix.RTM_NEWLINK, "wan1", net.FlagUp, unix.IFF_UP), Event{Kind: EventLink, Iface: "wan1"}},
		{"set down", linkUpdate(unix.RTM_NEWLINK, "wan1", 0, unix.IFF_LOWER_UP), Event{Kind: EventLink, Iface: "wan1"}},
		{"removed", linkUpdate(unix.RTM_DELLINK, "ppp0", net.FlagUp, unix.IFF_UP|unix.IFF_LOWER_UP), Event{Kind: EventLink, Iface: "ppp0", Removed: true}},
	} {
		got, ok := linkEvent(tc.u)
		if !ok || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, ok, tc.want)
		}
	}
	// What a closed channel yields must not crash anything.
	if _, ok := linkEvent(netlink.LinkUpdate{}); ok {
		t.Error("zero update made an event")
	}
}

func TestNeighEventOnlyFailed(t *testing.T) {
	for _, u := range []netlink.NeighUpdate{
		{},
		{Neigh: netlink.Neigh{State: netlink.NUD_REACHABLE, IP: net.ParseIP("192.0.2.1")}},
		{Neigh: netlink.Neigh{State: netlink.NUD_FAILED}}, // no address
	} {
		if ev, ok := neighEvent(u); ok {
			t.Errorf("%+v made %+v", u, ev)
		}
	}
}

// Subscriptions names every subscription Events makes, and only those:
// the daemon's loss counters start at 0 for each name in it.
func TestSubscriptionsListed(t *testing.T) {
	src, err := os.ReadFile("events.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range regexp.MustCompile(`forward\(s, "(\w+)"`).FindAllSubmatch(src, -1) {
		names = append(names, string(n[1]))
	}
	if !slices.Equal(names, Subscriptions) {
		t.Errorf("events.go forwards %q, Subscriptions lists %q", names, Subscriptions)
	}
}
