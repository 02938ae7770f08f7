package nfttest

import (
	"context"
	"sync"

	"flowpin/nft"
)

// TableEvents is nft.TableEvents fed by the test: Send delivers a
// notification on the live subscription, Lose ends it as a failed
// monitor does, FailNext fails the next Subscribe calls. A subscription
// ends when its context does, as the real one does. The zero value is
// ready to use.
type TableEvents struct {
	mu         sync.Mutex
	ch         chan nft.TableEvent
	ctx        context.Context
	subscribed int
	failNext   int
	failErr    error
}

// Subscribe implements the contract of nft.TableEvents.Subscribe.
func (e *TableEvents) Subscribe(ctx context.Context) (<-chan nft.TableEvent, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failNext > 0 {
		e.failNext--
		return nil, e.failErr
	}
	e.subscribed++
	ch := make(chan nft.TableEvent)
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
func (e *TableEvents) FailNext(n int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failNext, e.failErr = n, err
}

// Subscribed counts the subscriptions made.
func (e *TableEvents) Subscribed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.subscribed
}

// Live tells whether a subscription is open.
func (e *TableEvents) Live() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ch != nil
}

// Send delivers ev once the subscriber takes it; false if no
// subscription is open or it ends first.
func (e *TableEvents) Send(ev nft.TableEvent) bool {
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

// Changed sends that flowpin's table changed.
func (e *TableEvents) Changed() bool {
	return e.Send(nft.TableEvent{What: "nftables change"})
}

// Lose ends the subscription as a failed monitor does: a lost
// TableEvent, then the channel closed.
func (e *TableEvents) Lose() {
	e.Send(nft.TableEvent{Lost: true, What: nft.Subscription})
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch != nil {
		close(e.ch)
		e.ch = nil
	}
}
