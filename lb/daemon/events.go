package daemon

import (
	"context"
	"sync"

	"flowpin/nft"
	"flowpin/rules"
)

// KernelEvents are the daemon's Events from the kernel: Routing
// (rules.Events) and Table (nft.TableEvents), as one subscription. When
// either ends (it lost notifications), the other is ended too, so the
// daemon re-reads the kernel and subscribes to both again.
type KernelEvents struct {
	Routing RoutingEvents
	Table   TableEvents
}

var _ Events = KernelEvents{}

// Subscribe implements Events.
func (k KernelEvents) Subscribe(parent context.Context) (<-chan Event, error) {
	ctx, cancel := context.WithCancel(parent)
	routing, err := k.Routing.Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	table, err := k.Table.Subscribe(ctx)
	if err != nil {
		cancel()
		for range routing {
		}
		return nil, err
	}
	out := make(chan Event, 64)
	var wg sync.WaitGroup
	wg.Add(2)
	go relay(ctx, cancel, &wg, routing, routingEvent, out)
	go relay(ctx, cancel, &wg, table, tableEvent, out)
	go func() {
		wg.Wait()
		close(out)
	}()
	return out, nil
}

// relay passes in's events on until in is closed, then ends the other
// subscription. It keeps reading after ctx ends, so that in's sender
// never blocks and closes in.
func relay[T any](ctx context.Context, cancel context.CancelFunc, wg *sync.WaitGroup, in <-chan T, conv func(T) Event, out chan<- Event) {
	defer wg.Done()
	defer cancel()
	for e := range in {
		if ctx.Err() != nil {
			continue
		}
		select {
		case out <- conv(e):
		case <-ctx.Done():
		}
	}
}

func routingEvent(e rules.Event) Event {
	ev := Event{What: e.What, Iface: e.Iface, Removed: e.Removed, Up: e.Up, IP: e.IP, MAC: e.MAC}
	switch e.Kind {
	case rules.EventLink:
		ev.Kind = EventLink
	case rules.EventNeighFailed:
		ev.Kind = EventNeighFailed
	case rules.EventNeigh:
		ev.Kind = EventNeigh
	case rules.EventChange:
		ev.Kind = EventDrift
	case rules.EventLost:
		ev.Kind = EventLost
	}
	return ev
}

func tableEvent(e nft.TableEvent) Event {
	if e.Lost {
		return Event{Kind: EventLost, What: e.What}
	}
	return Event{Kind: EventDrift, What: e.What, Set: e.Set}
}
