package nft

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/nftables"
)

// Subscription names the subscription TableEvents makes, as a lost
// TableEvent names it.
const Subscription = "nftables"

// TableEvent is one notification about flowpin's table.
type TableEvent struct {
	// Lost: notifications were lost; whoever follows the table must
	// read it again. Else the table, one of its chains or rules changed.
	Lost bool
	// What: the subscription (Lost) or the change.
	What string
	// Set: the elements of this set of the table changed (an element
	// added, deleted or expired). Other changes have no Set.
	Set string
}

// TableEvents follows nftables changes to flowpin's own table in the
// caller's network namespace: other programs' rulesets are theirs.
type TableEvents struct{}

// Subscribe starts the subscription. An error the monitor reports comes
// as a lost TableEvent and the subscription goes on; when the monitor
// ends while ctx is live, a lost TableEvent comes and the channel is
// closed. The channel is closed when ctx ends too. Every goroutine
// Subscribe starts has ended by the time the channel is closed.
func (TableEvents) Subscribe(parent context.Context) (<-chan TableEvent, error) {
	mon := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectRuleset))
	nfc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	events, err := nfc.AddMonitor(mon)
	if err != nil {
		return nil, fmt.Errorf("monitor nftables: %w", err)
	}
	elems, err := dialElementEvents()
	if err != nil {
		_ = mon.Close()
		return nil, fmt.Errorf("monitor nftables set elements: %w", err)
	}
	ctx, cancel := context.WithCancel(parent)
	out := make(chan TableEvent, 64)
	send := func(e TableEvent) {
		select {
		case out <- e:
		case <-ctx.Done():
		}
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		_ = mon.Close()
		_ = elems.Close()
	}()
	go func() {
		defer wg.Done()
		elementEvents(elems, send)
		if ctx.Err() == nil {
			send(TableEvent{Lost: true, What: Subscription})
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		defer cancel()
		// Reading goes on after ctx ends: the library's goroutine
		// blocks on a send until someone does, and only then sees its
		// socket closed.
		for ev := range events {
			if ctx.Err() != nil {
				continue
			}
			if e, ok := tableEvent(ev); ok {
				send(e)
			}
		}
		if ctx.Err() == nil {
			send(TableEvent{Lost: true, What: Subscription})
		}
	}()
	go func() {
		wg.Wait()
		close(out)
	}()
	return out, nil
}

func tableEvent(ev *nftables.MonitorEvent) (TableEvent, bool) {
	if ev.Error != nil {
		// The monitor goes on after an error, but what the error hid
		// (an overflow) is unknown: re-read everything.
		return TableEvent{Lost: true, What: Subscription}, true
	}
	var table *nftables.Table
	switch v := ev.Data.(type) {
	case *nftables.Table:
		table = v
	case *nftables.Chain:
		table = v.Table
	case *nftables.Rule:
		table = v.Table
	}
	if table != nil && table.Name == TableName {
		return TableEvent{What: "nftables change"}, true
	}
	return TableEvent{}, false
}
