package daemon

import (
	"net"
	"net/netip"
	"testing"
)

// closeSpy is a connection that reports its Close.
type closeSpy struct {
	net.Conn
	onClose func()
}

func (c *closeSpy) Close() error { c.onClose(); return nil }

// A client that saw the server close its connection can count on its
// slot being free: the slot is given back before the socket closes. The
// other way round, a client that dialled again at once could be refused
// by a slot still counted (TestServePerClient slept for it).
func TestCapConnFreesItsSlotBeforeClosing(t *testing.T) {
	l := &capListener{lim: limits{MaxConns: 1}, per: map[string]int{}}
	who := addrClient(netip.MustParseAddr("127.0.0.2"))
	if !l.take(who) {
		t.Fatal("no slot for the first connection")
	}
	usedAtClose := -1
	c := &capConn{Conn: &closeSpy{onClose: func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		usedAtClose = l.used
	}}, client: who, release: func() { l.release(who) }}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if usedAtClose != 0 {
		t.Errorf("%d slots held when the socket closed, want 0", usedAtClose)
	}
	if err := c.Close(); err != nil || !l.take(who) || l.used != 1 {
		t.Errorf("after a second Close (%v): %d slots held, want the one just taken", err, l.used)
	}
}
