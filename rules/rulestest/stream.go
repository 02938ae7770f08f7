package rulestest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Stream is a subscription a test feeds: Send delivers a notification on
// the live subscription, End closes it as a lost one is closed, FailNext
// fails the next Subscribe calls. A subscription ends when its context
// does, as a real one does. The zero value is ready to use. It is the
// mechanism of every event fake (the routing and nftables subscriptions,
// and the daemon's own event stream in its tests).
type Stream[E any] struct {
	// Buffer is the channel's capacity: with one, notifications queue
	// while the subscriber is busy, as they do in a real subscription.
	Buffer int

	mu         sync.Mutex
	ch         chan E
	ctx        context.Context
	subscribed int
	failNext   int
	failErr    error
}

// Subscribe opens a subscription, or fails if FailNext asked for it.
func (s *Stream[E]) Subscribe(ctx context.Context) (<-chan E, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNext > 0 {
		s.failNext--
		return nil, s.failErr
	}
	s.subscribed++
	ch := make(chan E, s.Buffer)
	s.ch, s.ctx = ch, ctx
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ch == ch {
			close(ch)
			s.ch = nil
		}
	}()
	return ch, nil
}

// FailNext makes the next n calls of Subscribe fail with err.
func (s *Stream[E]) FailNext(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failErr = n, err
}

// Subscribed counts the subscriptions made.
func (s *Stream[E]) Subscribed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribed
}

// Live tells whether a subscription is open.
func (s *Stream[E]) Live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch != nil
}

// Send delivers ev once the subscriber takes it (or the buffer does);
// false if no subscription is open or it ends first.
func (s *Stream[E]) Send(ev E) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		return false
	}
	select {
	case s.ch <- ev:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// End sends last, then closes the subscription, as a subscription that
// lost notifications ends.
func (s *Stream[E]) End(last E) {
	s.Send(last)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// Recv takes one event from a subscription, or fails the test if none
// comes within 5 s or the channel is closed.
func Recv[E any](t testing.TB, ch <-chan E) E {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	var zero E
	return zero
}

// Closed waits (5 s at most) for a subscription's channel to be closed.
func Closed[E any](t testing.TB, ch <-chan E) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("%+v, want closed", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
}
