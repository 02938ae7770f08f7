package resolve

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	ttl     time.Duration
	fail    bool
	asked   []string
}

func (f *fakeResolver) Lookup(_ context.Context, name string) ([]netip.Addr, time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, name)
	if f.fail {
		return nil, 0, errors.New("SERVFAIL")
	}
	return f.answers[name], f.ttl, nil
}

type added struct {
	set     string
	addrs   []netip.Addr
	timeout time.Duration
}

type fakeWriter struct {
	mu   sync.Mutex
	adds []added
	err  error
}

func (f *fakeWriter) AddToSet(name string, addrs []netip.Addr, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds = append(f.adds, added{name, addrs, timeout})
	return f.err
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestOnce(t *testing.T) {
	s := Set{Name: "bank", Domains: []string{"bank.example"}, Timeout: 2 * time.Hour}
	a4, a6 := netip.MustParseAddr("203.0.113.50"), netip.MustParseAddr("2001:db8::50")
	for _, tc := range []struct {
		name      string
		ttl       time.Duration
		fail      bool
		writeErr  error
		wantNext  time.Duration
		wantAdded bool
	}{
		{"ttl 300s", 300 * time.Second, false, nil, 300 * time.Second, true},
		{"ttl 0: the floor", 0, false, nil, MinRefresh, true},
		{"ttl 2 days: the cap", 48 * time.Hour, false, nil, MaxRefresh, true},
		{"lookup fails: again soon", 300 * time.Second, true, nil, MinRefresh, false},
		{"set missing: again soon", 300 * time.Second, false, errors.New("no such set"), MinRefresh, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeResolver{answers: map[string][]netip.Addr{"bank.example": {a4, a6}}, ttl: tc.ttl, fail: tc.fail}
			w := &fakeWriter{err: tc.writeErr}
			if next := Once(context.Background(), s, "bank.example", r, w, quiet); next != tc.wantNext {
				t.Errorf("next lookup in %v, want %v", next, tc.wantNext)
			}
			if got := len(w.adds) == 1; got != tc.wantAdded {
				t.Fatalf("adds %+v", w.adds)
			}
			if tc.wantAdded {
				if a := w.adds[0]; a.set != "bank" || a.timeout != 2*time.Hour || len(a.addrs) != 2 {
					t.Errorf("added %+v: both families, with the set's timeout", a)
				}
			}
		})
	}
}

// Run looks every name up at once, then each again when its refresh is
// due, and stops with its context.
func TestRun(t *testing.T) {
	r := &fakeResolver{answers: map[string][]netip.Addr{
		"a.example": {netip.MustParseAddr("192.0.2.1")},
		"b.example": {netip.MustParseAddr("192.0.2.2")},
	}, ttl: time.Second}
	w := &fakeWriter{}
	// A clock that runs MinRefresh per real millisecond.
	const speed = MinRefresh / time.Millisecond
	start := time.Now()
	clk := Clock{
		Now:   func() time.Time { return start.Add(time.Since(start) * speed) },
		After: func(d time.Duration) <-chan time.Time { return time.After(d / speed) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, []Set{{Name: "s", Domains: []string{"a.example", "b.example"}, Timeout: time.Hour}}, r, w, quiet, clk)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.asked)
		r.mu.Unlock()
		if n >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.asked) < 6 || r.asked[0] == r.asked[1] {
		t.Fatalf("asked %v: both names, again and again", r.asked)
	}
}
