package nft

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/google/nftables"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestTableEventOnlyOwnTable(t *testing.T) {
	own := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	other := &nftables.Table{Name: "firewalld", Family: nftables.TableFamilyINet}
	for _, tc := range []struct {
		name string
		ev   nftables.MonitorEvent
		want *TableEvent
	}{
		{"own table", nftables.MonitorEvent{Data: own}, &TableEvent{What: "nftables change"}},
		{"own chain", nftables.MonitorEvent{Data: &nftables.Chain{Table: own}}, &TableEvent{What: "nftables change"}},
		{"own rule", nftables.MonitorEvent{Data: &nftables.Rule{Table: own}}, &TableEvent{What: "nftables change"}},
		{"other table", nftables.MonitorEvent{Data: &nftables.Rule{Table: other}}, nil},
		// dnsmasq adding to a domain set is no change of the table: the
		// daemon must not take it for drift.
		{"an element a resolver added", nftables.MonitorEvent{Type: nftables.MonitorEventTypeNewSetElem, Data: []nftables.SetElement{{Key: []byte{203, 0, 113, 10}}}}, nil},
		{"an element that expired", nftables.MonitorEvent{Type: nftables.MonitorEventTypeDelSetElem, Data: []nftables.SetElement{{Key: []byte{203, 0, 113, 10}}}}, nil},
		{"error", nftables.MonitorEvent{Error: unix.ENOBUFS}, &TableEvent{Lost: true, What: "nftables"}},
	} {
		got, ok := tableEvent(&tc.ev)
		if (tc.want == nil) == ok || (ok && got != *tc.want) {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, ok, tc.want)
		}
	}
}

// The real subscription sees changes to flowpin's table and none to
// another program's, and ends every goroutine it started when its
// context ends.
func TestTableEventsInNamespace(t *testing.T) {
	defer goleak.VerifyNone(t)
	inFreshNS(t, func(ns string) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		events, err := TableEvents{}.Subscribe(ctx)
		if err != nil {
			return err
		}
		nft := func(script string) error {
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", script).CombinedOutput(); err != nil {
				return fmt.Errorf("nft %s: %v\n%s", script, err, out)
			}
			return nil
		}
		if err := nft("add table inet other; add chain inet other c; add rule inet other c accept; delete table inet other"); err != nil {
			return err
		}
		// The monitor hears of a change within milliseconds: a quarter
		// of a second of silence says it was not passed on.
		select {
		case ev := <-events:
			t.Errorf("another program's table made %+v", ev)
		case <-time.After(250 * time.Millisecond):
		}
		if err := nft("add table inet " + TableName); err != nil {
			return err
		}
		select {
		case ev, ok := <-events:
			if !ok || ev != (TableEvent{What: "nftables change"}) {
				t.Errorf("got %+v (open %v), want flowpin's table's change", ev, ok)
			}
		case <-time.After(5 * time.Second):
			t.Error("no event for flowpin's table")
		}
		// Element changes name their set: an element of a file set
		// deleted by hand is drift, one a resolver added to a domain set
		// is not, and only the daemon knows which set is which.
		if err := nft("add table inet other; add set inet other set4_x { type ipv4_addr; }; add element inet other set4_x { 192.0.2.1 }; add set inet " + TableName + " set4_x { type ipv4_addr; flags interval; }"); err != nil {
			return err
		}
		select {
		case ev := <-events:
			t.Errorf("another table's elements, or a new set, made %+v", ev)
		case <-time.After(250 * time.Millisecond):
		}
		for _, op := range []string{"add", "delete"} {
			if err := nft(op + " element inet " + TableName + " set4_x { 192.0.2.0/24 }"); err != nil {
				return err
			}
			select {
			case ev := <-events:
				if want := (TableEvent{What: "elements of set set4_x changed", Set: "set4_x"}); ev != want {
					t.Errorf("%s element: got %+v, want %+v", op, ev, want)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s element: no event", op)
			}
		}
		cancel()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return nil
				}
				if ev.Lost {
					t.Errorf("%+v after cancel", ev)
				}
			case <-time.After(5 * time.Second):
				t.Error("channel not closed after cancel")
				return nil
			}
		}
	})
}
