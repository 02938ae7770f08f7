package daemon

import (
	"context"
	"net/netip"
	"time"

	"flowpin/lb/apply"
	"flowpin/lb/clock"
	"flowpin/lb/config"
	"flowpin/lb/daemon/tally"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// Applier is what the daemon needs of the kernel's routing and nftables:
// plan against the interfaces, apply the difference, and read back what
// flowpin owns (to adopt a running kernel). KernelApplier wraps
// *apply.Kernel; tests use a recording fake.
type Applier interface {
	PrepareWith(c *config.Config, o plan.Options) (*plan.Desired, error)
	Apply(d *plan.Desired) (*apply.Result, error)
	// Current reads back flowpin's rules and routes and its nft table.
	Current() (rules.State, *nft.Current, error)
}

// Flusher deletes flows from conntrack: a link's, or a policy's on a
// link (by ct label bit).
type Flusher interface {
	FlushMark(mark, mask uint32) error
	// FlushMarkFamily: one address family's (unix.AF_INET, AF_INET6).
	FlushMarkFamily(mark, mask uint32, family uint8) error
	// FlushLabel: the flows of one family that carry ct label bit.
	FlushLabel(mark, mask uint32, bit int, family uint8) (int, error)
	// FlushMarkExceptLabels: the flows of one family that carry none of
	// the ct label bits keep.
	FlushMarkExceptLabels(mark, mask uint32, family uint8, keep []int) (int, error)
	// FlushUnreplied: the flows of one family that never saw a reply and
	// carry none of the ct label bits keep.
	FlushUnreplied(mark, mask uint32, family uint8, keep []int) (int, error)
}

var _ Flusher = (*ct.Conntrack)(nil)

// FlowTable is conntrack as the daemon's flow tally needs it.
type FlowTable = tally.Table

// TrafficCounters reads the counters of flowpin's nft rules, from which
// each link's bytes and packets come (nft.LinkTraffic).
type TrafficCounters interface {
	Counters() (map[string]nft.Counter, error)
}

var _ TrafficCounters = (*nft.Conn)(nil)

// Prober sends one round of probes out of one link.
type Prober interface {
	Probe(targets []netip.Addr, timeout time.Duration) health.Round
	Close()
}

// ProberFactory opens a prober for link l's check that leaves by the
// link (bound to its interface, with its mark); with v6 it probes IPv6
// targets.
type ProberFactory func(l config.Link, v6 bool) (Prober, error)

// KernelProbers opens the prober of the link's check method: an ICMP
// socket (health.Prober, needs CAP_NET_RAW), or a health.ConnProber for
// tcp, http and dns.
func KernelProbers(l config.Link, v6 bool) (Prober, error) {
	switch l.Check.Method {
	case "", config.ProbeICMP:
		p, err := health.NewProber(l.Interface, l.Mark, v6)
		if err != nil {
			return nil, err
		}
		return p, nil
	case config.ProbeExec:
		return health.NewExecProber(l, v6)
	case config.ProbeARP:
		return health.NewARPProber(l.Interface, v6)
	}
	p, err := health.NewConnProber(l.Check, l.Interface, l.Mark)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Clock is the daemon's time: real in production, driven by hand in
// tests. verify waits on the same one.
type Clock = clock.Clock

// Timer is a one-shot timer that can be re-armed.
type Timer = clock.Timer

// RealClock is the wall clock.
type RealClock = clock.Real

// EventKind says what a notification is about.
type EventKind int

const (
	// EventLink: an interface changed or was removed.
	EventLink EventKind = iota
	// EventNeighFailed: the kernel gave up resolving a neighbour.
	EventNeighFailed
	// EventNeigh: a neighbour was resolved (IP, MAC).
	EventNeigh
	// EventDrift: an address, route, rule or flowpin's nft table changed.
	EventDrift
	// EventLost: notifications were lost (the socket overflowed or
	// failed); the kernel must be re-read at once.
	EventLost
)

// Event is one kernel notification, reduced to what the daemon acts on.
type Event struct {
	Kind EventKind
	// What: the subscription (EventLost) or the change (EventDrift).
	What  string
	Iface string
	// Removed: the interface was deleted. Up: administratively up with
	// carrier (EventLink).
	Removed, Up bool
	IP          netip.Addr // the neighbour (EventNeighFailed, EventNeigh)
	MAC         string     // its link-layer address (EventNeigh)
	// Set: the elements of this set of flowpin's table changed
	// (EventDrift); drift only if it is a file set.
	Set string
}

// Events is the source of kernel notifications: KernelEvents, in tests a
// fake.
type Events interface {
	// Subscribe starts every subscription. The channel is closed when
	// ctx ends or a subscription is lost (an EventLost comes first); the
	// daemon then subscribes again. Every goroutine Subscribe starts has
	// ended by the time the channel is closed.
	Subscribe(ctx context.Context) (<-chan Event, error)
}

// RoutingEvents are the kernel's notifications about links,
// neighbours, addresses, routes and ip rules, with the contract of
// Events.Subscribe.
type RoutingEvents interface {
	Subscribe(ctx context.Context) (<-chan rules.Event, error)
}

var _ RoutingEvents = rules.Events{}

// TableEvents are notifications about flowpin's nft table, with the
// contract of Events.Subscribe, except that a lost TableEvent may come
// without the channel being closed.
type TableEvents interface {
	Subscribe(ctx context.Context) (<-chan nft.TableEvent, error)
}

var _ TableEvents = nft.TableEvents{}

// SocketOwners name the local user behind a TCP client of the daemon's
// servers.
type SocketOwners interface {
	// ClientUID returns the uid that owns the client's end of the TCP
	// connection client->server, when that end is a socket in this
	// network namespace.
	ClientUID(server, client netip.AddrPort) (uint32, bool)
}

var _ SocketOwners = rules.SocketOwners{}

// kernelApplier adapts *apply.Kernel.
type kernelApplier struct{ *apply.Kernel }

// KernelApplier is the Applier of the kernel k works on.
func KernelApplier(k *apply.Kernel) Applier { return kernelApplier{k} }

func (k kernelApplier) Current() (rules.State, *nft.Current, error) {
	owned, err := k.Routes.Owned()
	if err != nil {
		return rules.State{}, nil, err
	}
	cur, err := k.NFT.Read()
	if err != nil {
		return rules.State{}, nil, err
	}
	return owned, cur, nil
}
