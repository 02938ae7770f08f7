package rulestest

import (
	"context"
	"net/netip"
	"sync"

	"flowpin/rules"
)

// Events is rules.Events fed by the test: Send delivers a notification
// on the live subscription, Lose ends it as an overflow does, FailNext
// fails the next Subscribe calls. A subscription ends when its context
// does, as the real one does. The zero value is ready to use.
type Events struct {
	mu         sync.Mutex
	ch         chan rules.Event
	ctx        context.Context
	subscribed int
	failNext   int
	failErr    error
}

// Subscribe implements the contract of rules.Events.Subscribe.
func (e *Events) Subscribe(ctx context.Context) (<-chan rules.Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failNext > 0 {
		e.failNext--
		return nil, e.failErr
	}
	e.subscribed++
	ch := make(chan rules.Event)
	e.ch, e.ctx = ch, ctx
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.ch == ch {
			close(ch)
			e.ch = nil
		}
	}()
	return ch, nil
}

// FailNext makes the next n calls of Subscribe fail with err.
func (e *Events) FailNext(n int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failNext, e.failErr = n, err
}

// Subscribed counts the subscriptions made.
func (e *Events) Subscribed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.subscribed
}

// Live tells whether a subscription is open.
func (e *Events) Live() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ch != nil
}

// Send delivers ev once the subscriber takes it; false if no
// subscription is open or it ends first.
func (e *Events) Send(ev rules.Event) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch == nil {
		return false
	}
	select {
	case e.ch <- ev:
		return true
	case <-e.ctx.Done():
		return false
	}
}

// Link sends an interface's change: up (with carrier), down, removed.
func (e *Events) Link(iface string, up, removed bool) bool {
	return e.Send(rules.Event{Kind: rules.EventLink, Iface: iface, Up: up, Removed: removed})
}

// NeighFailed sends that the kernel gave up resolving ip on iface.
func (e *Events) NeighFailed(iface string, ip netip.Addr) bool {
	return e.Send(rules.Event{Kind: rules.EventNeighFailed, Iface: iface, IP: ip})
}

// Neigh sends that ip on iface was resolved to mac.
func (e *Events) Neigh(iface string, ip netip.Addr, mac string) bool {
	return e.Send(rules.Event{Kind: rules.EventNeigh, Iface: iface, IP: ip, MAC: mac})
}

// Lose ends the subscription as an overflow does: an EventLost naming
// what, then the channel closed.
func (e *Events) Lose(what string) {
	e.Send(rules.Event{Kind: rules.EventLost, What: what})
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch != nil {
		close(e.ch)
		e.ch = nil
	}
}
