package ct

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"
)

// eventsNetns is a throwaway network namespace, deleted in t.Cleanup.
func eventsNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	h, _ := namedNetns(t)
	return h
}

// namedNetns is eventsNetns with its name, for commands run in it.
func namedNetns(t *testing.T) (netns.NsHandle, string) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and a network namespace")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "fp" + hex.EncodeToString(b) + "-ct"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	return h, name
}

func fakeFlow(i int, mark uint32) conntrack.Flow {
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return conntrack.NewFlow(17, 0, src, netip.MustParseAddr("203.0.113.10"), uint16(1024+i%50000), 443, 600, mark)
}

// withFlows creates flows in namespace h through a conntrack connection
// of the test's own (w, which the test may go on using: dump, delete) and
// opens the adapter there (c); both close with the test.
func withFlows(t *testing.T, h netns.NsHandle, flows []conntrack.Flow) (w *conntrack.Conn, c *Conntrack) {
	t.Helper()
	w, err := conntrack.Dial(&netlink.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	for i, fl := range flows {
		if err := w.Create(fl); err != nil {
			t.Fatalf("create flow %d: %v", i, err)
		}
	}
	if c, err = Open(int(h)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return w, c
}

func nextBatch(t *testing.T, ch <-chan []Event) []Event {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return nil
}

// A flow's NEW and DESTROY arrive with the ID a dump gives it, and a
// receive buffer that overflows is reported as EventLost, after which
// the subscription keeps delivering.
func TestSubscribeInNamespace(t *testing.T) {
	h := eventsNetns(t)
	c, err := Open(int(h))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.Subscribe(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := conntrack.Dial(&netlink.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Create(fakeFlow(1, 0x100)); err != nil {
		t.Fatal(err)
	}
	ev := nextBatch(t, events)[0]
	var dumped uint32
	if err := c.Walk(nil, DetailCounters, func(r *FlowRecord) { dumped = r.ID }); err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventNew || ev.Mark != 0x100 || ev.Proto != 17 || ev.ID == 0 || ev.ID != dumped {
		t.Errorf("got %+v, want a new UDP flow with mark 0x100 and the dump's ID %d", ev, dumped)
	}
	if err := w.Delete(fakeFlow(1, 0x100)); err != nil {
		t.Fatal(err)
	}
	if ev := nextBatch(t, events)[0]; ev.Type != EventDestroy || ev.ID != dumped || ev.Mark != 0x100 {
		t.Errorf("got %+v, want the flow's destroy", ev)
	}
	cancel()
	for range events {
	}

	// A tiny buffer, nobody reading: the kernel drops events.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	small, err := c.Subscribe(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if err := w.Create(fakeFlow(100+i, 0x200)); err != nil {
			t.Fatal(err)
		}
	}
	lost, news := 0, 0
	deadline := time.After(5 * time.Second)
	for lost == 0 || news == 0 {
		select {
		case b := <-small:
			for _, ev := range b {
				switch ev.Type {
				case EventLost:
					lost++
				case EventNew:
					news++
				}
			}
		case <-deadline:
			t.Fatalf("after 2000 flows into a 4 KiB buffer: %d losses reported, %d events", lost, news)
		}
	}
	if err := w.Create(fakeFlow(5000, 0x200)); err != nil {
		t.Fatal(err)
	}
	for {
		b := nextBatch(t, small)
		if b[len(b)-1].Type == EventNew {
			break
		}
	}
	cancel()
	for range small {
	}
	t.Logf("%d losses reported, %d events kept", lost, news)
}
