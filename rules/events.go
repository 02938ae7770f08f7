package rules

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// EventKind says what a routing notification is about.
type EventKind int

const (
	// EventLink: an interface changed or was removed.
	EventLink EventKind = iota
	// EventNeighFailed: the kernel gave up resolving a neighbour.
	EventNeighFailed
	// EventChange: an address, a route or an ip rule changed.
	EventChange
	// EventLost: notifications were lost (a socket overflowed or
	// failed); whoever follows the kernel must read it again.
	EventLost
	// EventNeigh: a neighbour was resolved, with MAC (it may have
	// changed: a modem replaced on a shared interface).
	EventNeigh
)

// Event is one routing notification, reduced to what flowpin acts on.
type Event struct {
	Kind EventKind
	// What: the subscription (EventLost) or the change (EventChange).
	What  string
	Iface string
	// Removed: the interface was deleted. Up: administratively up with
	// carrier (EventLink).
	Removed, Up bool
	IP          netip.Addr // the neighbour (EventNeighFailed, EventNeigh)
	MAC         string     // its link-layer address (EventNeigh)
}

// Subscriptions names the subscriptions Events makes, as an EventLost
// names the one it lost.
var Subscriptions = []string{"links", "neighbours", "addresses", "routes", "rules"}

// Events subscribes to the routing notifications of the caller's network
// namespace: links, neighbours, addresses, routes and ip rules.
//
// A burst (hundreds of link changes, thousands of neighbour entries) can
// overflow a subscription socket's receive queue (ENOBUFS, see
// netlink(7)); vishvananda/netlink then closes that subscription's
// channel. Subscribe turns that into an EventLost and closes its own
// channel, ending the other subscriptions: the caller reads the kernel
// again and subscribes again.
type Events struct {
	Log *slog.Logger
}

// rcvbuf is asked for each subscription socket; the kernel caps it at
// net.core.rmem_max unless forced (root may force it).
const rcvbuf = 4 << 20

// Subscribe starts every subscription. The channel is closed when ctx
// ends or a subscription is lost (an EventLost comes first). Every
// goroutine Subscribe starts has ended by the time the channel is closed.
func (e Events) Subscribe(parent context.Context) (<-chan Event, error) {
	ctx, cancel := context.WithCancel(parent)
	s := &subscription{ctx: ctx, cancel: cancel, log: e.Log, out: make(chan Event, 64)}
	if err := s.start(); err != nil {
		cancel()
		s.wg.Wait()
		return nil, err
	}
	go func() {
		s.wg.Wait()
		close(s.out)
	}()
	return s.out, nil
}

type subscription struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	wg     sync.WaitGroup
	out    chan Event
}

func (s *subscription) onErr(what string) func(error) {
	return func(err error) {
		if s.ctx.Err() == nil && s.log != nil {
			s.log.Warn("netlink notifications", "what", what, "err", err)
		}
	}
}

// send forwards e unless the subscription is ending.
func (s *subscription) send(e Event) {
	select {
	case s.out <- e:
	case <-s.ctx.Done():
	}
}

// lost reports a subscription whose channel closed while it was wanted,
// and ends the others, so the caller starts over with all of them.
func (s *subscription) lost(what string) {
	if s.ctx.Err() == nil {
		s.send(Event{Kind: EventLost, What: what})
	}
	s.cancel()
}

// forward reads in until the library closes it. It keeps reading after
// the subscription ends: the library's goroutine blocks on a send until
// someone does, and only then sees its socket closed.
func forward[T any](s *subscription, what string, in <-chan T, conv func(T) (Event, bool)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.lost(what)
		for u := range in {
			if s.ctx.Err() != nil {
				continue
			}
			if ev, ok := conv(u); ok {
				s.send(ev)
			}
		}
	}()
}

func (s *subscription) start() error {
	done := s.ctx.Done()
	links := make(chan netlink.LinkUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		ErrorCallback: s.onErr("links"), ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: true,
	}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	forward(s, "links", links, linkEvent)

	neigh := make(chan netlink.NeighUpdate, 256)
	if err := netlink.NeighSubscribeWithOptions(neigh, done, netlink.NeighSubscribeOptions{
		ErrorCallback: s.onErr("neighbours"), ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: true,
	}); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	forward(s, "neighbours", neigh, neighEvent)

	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		ErrorCallback: s.onErr("addresses"), ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: true,
	}); err != nil {
		return fmt.Errorf("subscribe to addresses: %w", err)
	}
	forward(s, "addresses", addrs, func(netlink.AddrUpdate) (Event, bool) { return Event{Kind: EventChange, What: "address change"}, true })

	routes := make(chan netlink.RouteUpdate, 256)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		ErrorCallback: s.onErr("routes"), ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: true,
	}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	forward(s, "routes", routes, func(netlink.RouteUpdate) (Event, bool) { return Event{Kind: EventChange, What: "route change"}, true })

	return s.watchRules()
}

// watchRules: the library has no rule subscription; any message on the
// rule groups is reason enough to sync.
func (s *subscription) watchRules() error {
	sock, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE)
	if err != nil {
		return fmt.Errorf("subscribe to rules: %w", err)
	}
	rules := make(chan struct{})
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		<-s.ctx.Done()
		sock.Close()
	}()
	go func() {
		defer s.wg.Done()
		defer close(rules)
		for {
			if _, _, err := sock.Receive(); err != nil {
				s.onErr("rules")(err)
				return
			}
			select {
			case rules <- struct{}{}:
			case <-s.ctx.Done():
			}
		}
	}()
	forward(s, "rules", rules, func(struct{}) (Event, bool) { return Event{Kind: EventChange, What: "ip rule change"}, true })
	return nil
}

// linkEvent: a removed interface, one set down, or one without carrier
// has lost its link.
func linkEvent(u netlink.LinkUpdate) (Event, bool) {
	if u.Link == nil {
		return Event{}, false
	}
	a := u.Attrs()
	removed := u.Header.Type == unix.RTM_DELLINK
	up := !removed && a.Flags&unix.IFF_UP != 0 && u.IfInfomsg.Flags&unix.IFF_LOWER_UP != 0
	return Event{Kind: EventLink, Iface: a.Name, Removed: removed, Up: up}, true
}

// neighEvent passes on failed neighbours and resolved ones with their
// link-layer address; the rest of the neighbour table's churn (probes,
// entries going stale) says nothing about flowpin's state.
func neighEvent(u netlink.NeighUpdate) (Event, bool) {
	failed := u.State&netlink.NUD_FAILED != 0
	resolved := u.Type == unix.RTM_NEWNEIGH && len(u.HardwareAddr) > 0 && u.State&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
	if !failed && !resolved {
		return Event{}, false
	}
	ip, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return Event{}, false
	}
	l, err := netlink.LinkByIndex(u.LinkIndex)
	if err != nil {
		return Event{}, false
	}
	if failed {
		return Event{Kind: EventNeighFailed, Iface: l.Attrs().Name, IP: ip.Unmap()}, true
	}
	return Event{Kind: EventNeigh, Iface: l.Attrs().Name, IP: ip.Unmap(), MAC: u.HardwareAddr.String()}, true
}
