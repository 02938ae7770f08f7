package nfttest

import (
	"context"
	"errors"
	"testing"

	"flowpin/nft"
	"flowpin/rules/rulestest"
)

// The fake keeps the real subscription's contract: events in order, a
// lost one then the channel closed, closed when the context ends.
func TestTableEvents(t *testing.T) {
	var e TableEvents
	if e.Changed() {
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
	go func() {
		e.Changed()
		e.Send(nft.TableEvent{Lost: true, What: nft.Subscription}) // an error the monitor survives
		e.Changed()
		e.Lose()
	}()
	for _, want := range []nft.TableEvent{
		{What: "nftables change"},
		{Lost: true, What: "nftables"},
		{What: "nftables change"},
		{Lost: true, What: "nftables"},
	} {
		if got := rulestest.Recv(t, ch); got != want {
			t.Errorf("%+v, want %+v", got, want)
		}
	}
	rulestest.Closed(t, ch)
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
	rulestest.Closed(t, ch)
	if e.Changed() {
		t.Error("Send after the context ended delivered")
	}
}
