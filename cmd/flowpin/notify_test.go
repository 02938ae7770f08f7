package main

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// NOTIFY_SOCKET names a socket nobody reads (not systemd's): once its
// queue is full a datagram write waits, and the loop that pings must not
// wait with it.
func TestWatchdogPingNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	ping := watchdogPing()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5000 {
			ping()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Close() // unblocks the writer, so the test ends
		t.Fatal("the watchdog ping blocked on a notify socket nobody reads")
	}
	// The pings were sent while there was room.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "WATCHDOG=1" {
		t.Errorf("the socket got %q, %v; want WATCHDOG=1", buf[:n], err)
	}
}
