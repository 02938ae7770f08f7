package rulestest

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"flowpin/rules"
)

// The fake keeps the real subscription's contract: events in order, a
// lost one then the channel closed, closed when the context ends.
func TestEvents(t *testing.T) {
	var e Events
	if e.Link("wan1", true, false) {
		t.Error("Send with no subscription delivered")
	}
	boom := errors.New("boom")
	e.FailNext(1, boom)
	if _, err := e.Subscribe(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Subscribe: %v, want boom", err)
	}
	ch, err := e.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	gw := netip.MustParseAddr("192.0.2.1")
	go func() {
		e.Link("wan1", false, true)
		e.NeighFailed("wan2", gw)
		e.Lose("links")
	}()
	for _, want := range []rules.Event{
		{Kind: rules.EventLink, Iface: "wan1", Removed: true},
		{Kind: rules.EventNeighFailed, Iface: "wan2", IP: gw},
		{Kind: rules.EventLost, What: "links"},
	} {
		if got := Recv(t, ch); got != want {
			t.Errorf("%+v, want %+v", got, want)
		}
	}
	Closed(t, ch)
	if e.Live() || e.Subscribed() != 1 {
		t.Errorf("live %v, %d subscriptions; want none live, 1 made", e.Live(), e.Subscribed())
	}

	ctx, cancel := context.WithCancel(context.Background())
	ch, err = e.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Live() {
		t.Error("not live")
	}
	cancel()
	Closed(t, ch)
	if e.Send(rules.Event{Kind: rules.EventChange, What: "route change"}) {
		t.Error("Send after the context ended delivered")
	}
}

func TestSocketOwners(t *testing.T) {
	var s SocketOwners
	server := netip.MustParseAddrPort("127.0.0.1:9108")
	client := netip.MustParseAddrPort("127.0.0.7:40000")
	if _, ok := s.ClientUID(server, client); ok {
		t.Error("the zero value knows a socket")
	}
	s.Own(server, client, 1000)
	if uid, ok := s.ClientUID(server, client); !ok || uid != 1000 {
		t.Errorf("%d %v, want 1000", uid, ok)
	}
	if _, ok := s.ClientUID(client, server); ok {
		t.Error("the other end passed for the client")
	}
	if s.Asked() != 3 {
		t.Errorf("asked %d times, want 3", s.Asked())
	}
}
