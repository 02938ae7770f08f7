package daemon

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/health"
	"flowpin/nft"
	"flowpin/nft/nfttest"
	"flowpin/rules"
	"flowpin/rules/rulestest"
)

// Both sources' notifications reach the daemon as its events; an error
// the nft monitor survives is a loss that leaves both subscribed.
func TestKernelEventsRelays(t *testing.T) {
	routing, table := &rulestest.Events{}, &nfttest.TableEvents{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := KernelEvents{Routing: routing, Table: table}.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gw := netip.MustParseAddr("198.51.100.1")
	for _, c := range []struct {
		send func() bool
		want Event
	}{
		{func() bool { return routing.Link("wan1", true, false) }, Event{Kind: EventLink, Iface: "wan1", Up: true}},
		{func() bool { return routing.Link("wan2", false, false) }, Event{Kind: EventLink, Iface: "wan2"}},
		{func() bool { return routing.Link("ppp0", false, true) }, Event{Kind: EventLink, Iface: "ppp0", Removed: true}},
		{func() bool { return routing.NeighFailed("wan1", gw) }, Event{Kind: EventNeighFailed, Iface: "wan1", IP: gw}},
		{func() bool { return routing.Send(rules.Event{Kind: rules.EventChange, What: "ip rule change"}) }, Event{Kind: EventDrift, What: "ip rule change"}},
		{table.Changed, Event{Kind: EventDrift, What: "nftables change"}},
		{func() bool { return table.Send(nft.TableEvent{Lost: true, What: nft.Subscription}) }, Event{Kind: EventLost, What: "nftables"}},
	} {
		if !c.send() {
			t.Fatalf("%+v: not delivered", c.want)
		}
		if got := rulestest.Recv(t, ch); got != c.want {
			t.Errorf("%+v, want %+v", got, c.want)
		}
	}
	if !routing.Live() || !table.Live() {
		t.Errorf("live: routing %v, nft %v; want both", routing.Live(), table.Live())
	}
	cancel()
	rulestest.Closed(t, ch)
}

// A lost subscription, of either source, comes as one EventLost naming
// it, and ends the other: the channel is closed once both are, and the
// daemon starts over with both.
func TestKernelEventsLoss(t *testing.T) {
	for _, c := range []struct {
		name string
		lose func(*rulestest.Events, *nfttest.TableEvents)
		want Event
	}{
		{"routing", func(r *rulestest.Events, _ *nfttest.TableEvents) { r.Lose("neighbours") }, Event{Kind: EventLost, What: "neighbours"}},
		{"nftables", func(_ *rulestest.Events, n *nfttest.TableEvents) { n.Lose() }, Event{Kind: EventLost, What: "nftables"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			routing, table := &rulestest.Events{}, &nfttest.TableEvents{}
			ch, err := KernelEvents{Routing: routing, Table: table}.Subscribe(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			go c.lose(routing, table)
			if got := rulestest.Recv(t, ch); got != c.want {
				t.Errorf("%+v, want %+v", got, c.want)
			}
			rulestest.Closed(t, ch)
			if routing.Live() || table.Live() {
				t.Errorf("live after the loss: routing %v, nft %v", routing.Live(), table.Live())
			}
		})
	}
}

// The end of the context closes the channel without a loss; a failed
// subscription to nftables ends the one to routing already made.
func TestKernelEventsEnd(t *testing.T) {
	routing, table := &rulestest.Events{}, &nfttest.TableEvents{}
	k := KernelEvents{Routing: routing, Table: table}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := k.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	rulestest.Closed(t, ch)

	boom := errors.New("boom")
	table.FailNext(1, boom)
	if _, err := k.Subscribe(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Subscribe: %v, want boom", err)
	}
	if routing.Subscribed() != 2 || routing.Live() {
		t.Errorf("routing: %d subscriptions, live %v; want 2, none live", routing.Subscribed(), routing.Live())
	}
	routing.FailNext(1, boom)
	if _, err := k.Subscribe(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Subscribe: %v, want boom", err)
	}
	if table.Subscribed() != 1 {
		t.Errorf("nftables subscribed %d times after routing failed, want 1 (the first)", table.Subscribed())
	}
}

// Through the adapters' subscriptions: a carrier lost takes the link
// down; a lost nftables subscription is counted under its name, the
// kernel is re-read at once, and both sources are subscribed again.
func TestDaemonOnKernelEvents(t *testing.T) {
	h := newHarness(t)
	routing, table := &rulestest.Events{}, &nfttest.TableEvents{}
	h.kernel = KernelEvents{Routing: routing, Table: table}
	h.start()
	h.waitTranscript(both)

	routing.FailNext(1, errSubscribe) // the first attempt to subscribe again fails
	table.Lose()
	h.waitTranscript(both, both) // no clock advance: at once
	if got := testutil.ToFloat64(h.d.Metrics().subLosses.WithLabelValues("nftables")); got != 1 {
		t.Errorf("nftables losses: %v", got)
	}
	// The retry to subscribe waits a second.
	h.eventually("second subscribe attempt", func() bool { return h.clock.ArmedBy(loopTimers) >= 1 })
	if table.Live() || routing.Live() {
		t.Errorf("live after a failed attempt: routing %v, nft %v", routing.Live(), table.Live())
	}
	h.clock.Advance(time.Second)
	h.eventually("subscribed again", func() bool { return routing.Live() && table.Live() })
	h.waitTranscript(both, both, both)
	if routing.Subscribed() != 2 || table.Subscribed() != 2 {
		t.Errorf("subscriptions: routing %d, nft %d; want 2 each", routing.Subscribed(), table.Subscribed())
	}

	routing.Link("wan2", false, false)
	h.waitState("isp2", health.StateDown)
}
