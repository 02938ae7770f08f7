package rules

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// inFreshNetns runs fn on a thread in a new, empty network namespace. The
// thread is never returned to the runtime's pool: it exits with the
// goroutine.
func inFreshNetns(t *testing.T, fn func()) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// The real subscription reports an interface appearing, losing carrier
// and being removed, and ends every goroutine it started when its
// context ends.
func TestEventsLinkLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t)
	inFreshNetns(t, func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		events, err := Events{}.Subscribe(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		next := func(want func(Event) bool) {
			t.Helper()
			deadline := time.After(5 * time.Second)
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						t.Error("subscription closed")
						return
					}
					if want(ev) {
						return
					}
				case <-deadline:
					t.Error("no such event")
					return
				}
			}
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan9"}, PeerName: "peer9"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Error(err)
			return
		}
		next(func(ev Event) bool { return ev.Kind == EventLink && ev.Iface == "wan9" && !ev.Up && !ev.Removed })
		if err := netlink.LinkSetUp(veth); err != nil {
			t.Error(err)
		}
		peer, err := netlink.LinkByName("peer9")
		if err == nil {
			err = netlink.LinkSetUp(peer)
		}
		if err != nil {
			t.Error(err)
		}
		next(func(ev Event) bool { return ev.Kind == EventLink && ev.Iface == "wan9" && ev.Up })
		if err := netlink.LinkDel(veth); err != nil {
			t.Error(err)
		}
		next(func(ev Event) bool { return ev.Kind == EventLink && ev.Iface == "wan9" && ev.Removed })

		cancel()
		closed := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-events:
				if !ok {
					return
				}
			case <-closed:
				t.Error("channel not closed after cancel")
				return
			}
		}
	})
}
