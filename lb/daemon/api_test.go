package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/ctl"
	"flowpin/lb/health"
	"flowpin/lb/status"
	"flowpin/rules/rulestest"
)

type fakeSource struct {
	health   []health.LinkHealth
	statuses atomic.Int32
}

func (f *fakeSource) Health() []health.LinkHealth { return f.health }

func (f *fakeSource) Status() (*status.Status, error) {
	f.statuses.Add(1)
	return &status.Status{Schema: status.StatusSchema, Daemon: true, Links: []status.LinkStatus{{Name: "isp1", State: health.StateUp}}}, nil
}

// startAPI serves src on a socket in dir as listenAPI makes it.
func startAPI(t *testing.T, dir string, src Source) (net.Listener, string) {
	t.Helper()
	ln, err := listenAPI(dir, os.Getgid(), 0o660)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ServeAPI(ctx, ln, src, &rulestest.SocketOwners{}) }()
	t.Cleanup(func() { cancel(); <-done })
	path, err := ctl.SocketPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ln, path
}

func TestAPISocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flowpin")
	src := &fakeSource{health: []health.LinkHealth{{Name: "isp1", State: health.StateUp, Reason: "ok"}}}
	uid := uint32(os.Geteuid())

	asker := ctl.Client{Dir: dir, Trust: uid}
	if _, err := asker.Health(context.Background()); !errors.Is(err, ctl.ErrNoDaemon) {
		t.Fatalf("before any daemon: %v, want ErrNoDaemon", err)
	}
	ln, path := startAPI(t, dir, src)

	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil || st.Mode&0o777 != 0o755 {
		t.Errorf("dir mode %o (%v), want 0755", st.Mode&0o777, err)
	}
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o777 != 0o660 || st.Gid != uint32(os.Getgid()) {
		t.Errorf("socket mode %o gid %d (%v), want a socket 0660 gid %d", st.Mode, st.Gid, err, os.Getgid())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("dir holds %v, want only the socket", ents)
	}

	if h, err := asker.Health(context.Background()); err != nil || len(h) != 1 || h[0].Reason != "ok" {
		t.Errorf("health: %v %+v", err, h)
	}
	if s, err := asker.Status(context.Background()); err != nil || !s.Daemon || s.Links[0].Name != "isp1" {
		t.Errorf("status: %v %+v", err, s)
	}

	// A server running as another user is not believed. (The product
	// trusts uid 0; here the server's uid is compared with another one.)
	_, err := ctl.Client{Dir: dir, Trust: uid + 1}.Health(context.Background())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("served by uid %d, not by root", uid)) {
		t.Errorf("server uid %d, trusting uid %d: %v", uid, uid+1, err)
	}

	// A live daemon makes the second one refuse.
	if _, err := listenAPI(dir, os.Getgid(), 0o660); err == nil || !strings.Contains(err.Error(), "another flowpin run is active") {
		t.Errorf("second daemon: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after close: %v", err)
	}
}

// A daemon killed with SIGKILL leaves its socket file; the next one finds
// nobody answering on it and replaces it.
func TestAPISocketStale(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flowpin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path, err := ctl.SocketPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	src := &fakeSource{health: []health.LinkHealth{{Name: "isp1"}}}
	startAPI(t, dir, src)
	h, err := ctl.Client{Dir: dir, Trust: uint32(os.Geteuid())}.Health(context.Background())
	if err != nil || len(h) != 1 {
		t.Errorf("after replacing the stale socket: %v %v", err, h)
	}
}

// The socket directory must be ours alone.
func TestAPISocketDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "flowpin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := listenAPI(dir, 0, 0o600); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("dir owned by nobody: %v", err)
	}
	// Ours but writable by others: tightened.
	dir2 := filepath.Join(t.TempDir(), "flowpin")
	if err := os.Mkdir(dir2, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir2, 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := listenAPI(dir2, 0, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Stat(dir2); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("dir mode %v (%v), want 0755", fi.Mode().Perm(), err)
	}
}

// However many clients ask, the conntrack table is dumped at most once a
// second.
func TestAPIStatusShared(t *testing.T) {
	src := &fakeSource{}
	h := APIHandler(src)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := &recorder{header: http.Header{}}
			h.ServeHTTP(rec, mustRequest(t, "/status"))
		}()
	}
	wg.Wait()
	if n := src.statuses.Load(); n != 1 {
		t.Errorf("50 requests computed the status %d times, want 1", n)
	}
}

type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func mustRequest(t *testing.T, path string) *http.Request {
	r, err := http.NewRequest(http.MethodGet, "http://flowpin"+path, nil)
	if err != nil {
		t.Error(err)
	}
	return r
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Idle connections beyond the cap are closed at once, the ones within it
// after the header timeout, and a real request is still answered.
func TestServeLimits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := limits{MaxConns: 4, ReadHeader: time.Second, Read: time.Second, Write: time.Second, Idle: time.Second, MaxHeaderBytes: 4096}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }), lim, kernelClient(&rulestest.SocketOwners{}))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	const idle = 200
	base := openFDs(t)
	var conns []net.Conn
	for range idle {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	closed := func(c net.Conn, within time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(within))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}
	// The server accepts and closes the ones beyond the cap one by one:
	// "at once" is well before the header timeout, whatever the load.
	gone := make([]bool, idle)
	open := idle
	for deadline := time.Now().Add(lim.ReadHeader / 2); open > lim.MaxConns && time.Now().Before(deadline); {
		open = 0
		for i, c := range conns {
			if !gone[i] && closed(c, time.Millisecond) {
				gone[i] = true
			}
			if !gone[i] {
				open++
			}
		}
	}
	if open > lim.MaxConns {
		t.Errorf("%d connections still open after %v, want at most %d", open, lim.ReadHeader/2, lim.MaxConns)
	}
	// It accepted them all by now. The test holds the client ends; the
	// server holds at most MaxConns.
	if held := openFDs(t) - base - idle; held > lim.MaxConns+2 {
		t.Errorf("server holds %d descriptors for %d idle connections, want at most %d", held, idle, lim.MaxConns)
	}
	// After the header timeout, every idle connection is closed.
	for i, c := range conns {
		if !gone[i] && !closed(c, lim.ReadHeader+time.Second) {
			t.Fatalf("idle connection %d still open after %v", i, lim.ReadHeader+time.Second)
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/", ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Errorf("answer %q", b)
	}
}

// A socket served by a process that is not root, at the daemon's path, is
// not believed: the client asks the kernel who serves it (SO_PEERCRED).
// The server here listens from a thread whose effective uid is nobody's,
// which is what the kernel records for the socket.
func TestAPIRefusesNonRootServer(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root, to listen as another user")
	}
	// Not t.TempDir: its parent is root's alone.
	dir, err := os.MkdirTemp("", "flowpin-api-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	path, err := ctl.SocketPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ln  net.Listener
		err error
	}
	res := make(chan result, 1)
	go func() {
		// Locked and never unlocked: the thread ends with the goroutine,
		// so no other goroutine ever runs as nobody.
		runtime.LockOSThread()
		const keep = ^uintptr(0) // -1: leave as is
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, 65534, keep); e != 0 {
			res <- result{err: e}
			return
		}
		ln, err := net.Listen("unix", path)
		res <- result{ln, err}
	}()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.ln.Close()
	go http.Serve(r.ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `[{"name":"isp1","state":"up","reason":"forged\u001b[2J"}]`)
	}))
	asker := ctl.Client{Dir: dir}
	h, err := asker.Health(context.Background())
	if err == nil || !strings.Contains(err.Error(), "served by uid 65534, not by root") {
		t.Errorf("server as nobody: %v %v", err, h)
	}

	// The daemon takes the name back (and the directory: 0777 before).
	startAPI(t, dir, &fakeSource{health: []health.LinkHealth{{Name: "isp1", Reason: "real"}}})
	if h, err = asker.Health(context.Background()); err != nil || len(h) != 1 || h[0].Reason != "real" {
		t.Errorf("after the daemon started: %v %+v", err, h)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("dir %v %v, want 0755", fi.Mode(), err)
	}
}

// serveTest serves h on 127.0.0.1 within lim, telling clients apart with
// who, until the test ends.
func serveTest(t *testing.T, lim limits, who func(net.Conn) client, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, h, lim, who) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

// A client that trickles one request after another, each well within the
// per-request timeouts, on one connection: it is cut when the
// connection's time is up, not served for as long as it keeps trickling.
func TestServeConnLifetime(t *testing.T) {
	lim := limits{MaxConns: 4, ReadHeader: 2 * time.Second, Read: 2 * time.Second, Write: time.Second,
		Idle: time.Second, Conn: 3 * time.Second, MaxHeaderBytes: 4096}
	addr := serveTest(t, lim, kernelClient(&rulestest.SocketOwners{}), okHandler)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opened := time.Now()
	br := bufio.NewReader(c)
	served := 0
	request := func() error {
		// Five pieces 40 ms apart: about 200 ms a request, a tenth of
		// ReadHeader, so that a loaded machine's slower sleeps (a 5 ms
		// sleep per byte took over 500 ms a request here) never trip it.
		req := []byte("GET / HTTP/1.1\r\nHost: flowpin\r\nX-Slow: 1\r\n\r\n")
		for piece := range slices.Chunk(req, (len(req)+4)/5) {
			if _, err := c.Write(piece); err != nil {
				return err
			}
			time.Sleep(40 * time.Millisecond)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("answer %s", resp.Status)
		}
		return nil
	}
	var err2 error
	for err2 == nil {
		if time.Since(opened) > lim.Conn+3*time.Second {
			t.Fatalf("a trickling client still served (%d requests) %v after it connected; want it cut after %v", served, time.Since(opened).Round(time.Millisecond), lim.Conn)
		}
		if err2 = request(); err2 == nil {
			served++
		}
	}
	took := time.Since(opened)
	t.Logf("trickling client served %d requests, cut after %v (%v)", served, took.Round(time.Millisecond), err2)
	// Each request takes about 200 ms: several fit before the cut, so
	// what cut it was the connection's life, not a request's timeout.
	if served < 3 {
		t.Errorf("only %d trickled requests served before the cut", served)
	}
	if took > lim.Conn+time.Second {
		t.Errorf("cut after %v, want about %v", took, lim.Conn)
	}
}

// dialFrom opens n connections to addr from the local address from.
func dialFrom(t *testing.T, addr, from string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	var cs []net.Conn
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

// stillOpen counts the connections the server has not closed, waiting up
// to limit for that count to fall to want (the server accepts and closes
// them one by one).
func stillOpen(cs []net.Conn, want int, limit time.Duration) int {
	closed := make([]bool, len(cs))
	deadline := time.Now().Add(limit)
	for {
		open := 0
		for i, c := range cs {
			if closed[i] {
				continue
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				closed[i] = true
				continue
			}
			open++
		}
		if open <= want || time.Now().After(deadline) {
			return open
		}
	}
}

// One client holding (or trickling on) every connection it can gets
// PerClient of them; the others are closed at once, and another client is
// served. Root gets in even when everyone else is full.
func TestServePerClient(t *testing.T) {
	lim := limits{MaxConns: 6, PerClient: 2, RootConns: 2, ReadHeader: 10 * time.Second, Read: 10 * time.Second,
		Write: 10 * time.Second, Idle: 10 * time.Second, Conn: 20 * time.Second, MaxHeaderBytes: 4096}
	// Source addresses stand for what the kernel would say.
	who := func(c net.Conn) client {
		ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		if ip == netip.MustParseAddr("127.0.0.9") {
			return userClient(0)
		}
		return addrClient(ip)
	}
	addr := serveTest(t, lim, who, okHandler)
	ok := func(from string) bool {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		// HTTP/1.0: the server gives the slot back and closes, before
		// the next step counts on the slot.
		_, _ = io.Copy(io.Discard, br)
		return resp.StatusCode == http.StatusOK
	}

	hostile := dialFrom(t, addr, "127.0.0.2", 20)
	if open := stillOpen(hostile, lim.PerClient, 2*time.Second); open != lim.PerClient {
		t.Errorf("one client holds %d connections, want %d", open, lim.PerClient)
	}
	if !ok("127.0.0.3") {
		t.Fatal("another client is not served while one holds all it can")
	}
	// Two more clients take their share: every ordinary slot is held.
	others := append(dialFrom(t, addr, "127.0.0.4", 2), dialFrom(t, addr, "127.0.0.5", 2)...)
	if open := stillOpen(others, 4, time.Second); open != 4 {
		t.Errorf("%d of 4 connections of two clients within their share open", open)
	}
	if ok("127.0.0.6") {
		t.Error("a client was served with every slot held")
	}
	if !ok("127.0.0.9") {
		t.Error("root was not served with every ordinary slot held")
	}
	// The slots come back when the hostile client lets go.
	for _, c := range hostile {
		c.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for !ok("127.0.0.6") {
		if time.Now().After(deadline) {
			t.Fatal("slots not released after the client closed its connections")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A TCP client is the user the kernel says owns its end of the
// connection (asked with the addresses unmapped, so an IPv4 client of a
// dual-stack listener is found), else its address; a unix socket's
// client is the user SO_PEERCRED names.
func TestKernelClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln6, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	port6 := ln6.Addr().(*net.TCPAddr).Port
	for _, c := range []struct {
		from, to string
		ln       net.Listener
		server   string // the server's end, unmapped
		owned    bool
		want     client
	}{
		{"127.0.0.7", ln.Addr().String(), ln, ln.Addr().String(), true, userClient(1000)},
		{"127.0.0.7", ln.Addr().String(), ln, ln.Addr().String(), false, client{key: "127.0.0.7"}},
		{"::1", fmt.Sprintf("[::1]:%d", port6), ln6, fmt.Sprintf("[::1]:%d", port6), true, userClient(1000)},
		{"::1", fmt.Sprintf("[::1]:%d", port6), ln6, fmt.Sprintf("[::1]:%d", port6), false, client{key: "::/64"}},
		// An IPv4 client of a dual-stack listener.
		{"127.0.0.7", fmt.Sprintf("127.0.0.1:%d", port6), ln6, fmt.Sprintf("127.0.0.1:%d", port6), true, userClient(1000)},
	} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.from)}}
		conn, err := d.Dial("tcp", c.to)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		var owners rulestest.SocketOwners
		if c.owned {
			owners.Own(netip.MustParseAddrPort(c.server), conn.LocalAddr().(*net.TCPAddr).AddrPort(), 1000)
		}
		if got := kernelClient(&owners)(s); got != c.want {
			t.Errorf("TCP from %s to %s (known to the kernel: %v): %+v, want %+v", c.from, c.to, c.owned, got, c.want)
		}
		conn.Close()
		s.Close()
	}

	uid := uint32(os.Geteuid())
	path := filepath.Join(t.TempDir(), "s")
	uln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := uln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var owners rulestest.SocketOwners
	if got, want := kernelClient(&owners)(s), userClient(uid); got != want {
		t.Errorf("unix: %+v, want %+v", got, want)
	}
	if owners.Asked() != 0 {
		t.Errorf("sock_diag asked %d times about a unix socket", owners.Asked())
	}

	if got := addrClient(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); got.key != "2001:db8:1:2::/64" || got.known {
		t.Errorf("IPv6 client: %+v, want its /64", got)
	}
	if got := addrClient(netip.MustParseAddr("::ffff:192.0.2.7")); got.key != "192.0.2.7" || got.known {
		t.Errorf("IPv4-mapped client: %+v", got)
	}
	if !mayReadStatus(userClient(0)) || mayReadStatus(client{key: "192.0.2.7"}) {
		t.Error("mayReadStatus: want root yes, an unknown user no")
	}
}

type intentSource struct {
	fakeSource
	intent *ctl.Intent
}

func (f *intentSource) Intent() (ctl.Intent, bool) {
	if f.intent == nil {
		return ctl.Intent{}, false
	}
	return *f.intent, true
}

// GET /intent says what the daemon last applied beyond the config (verify
// plans with it); before its first sync, that it has none yet.
func TestAPIIntent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flowpin")
	src := &intentSource{}
	startAPI(t, dir, src)
	asker := ctl.Client{Dir: dir, Trust: uint32(os.Geteuid())}
	if in, err := asker.Intent(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("before the first sync: %+v, %v; want the daemon's 503", in, err)
	}
	src.intent = &ctl.Intent{
		Down:  map[string]string{"isp2": "drained by operator since 10:32:05"},
		Down6: map[string]string{"isp1": "down: 3/3 probes lost"},
		Held6: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/56")},
	}
	in, err := asker.Intent(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, src.intent) {
		t.Errorf("intent %+v, want %+v", in, src.intent)
	}
	// A Source that cannot tell (an older daemon's) has no such path.
	dir2 := filepath.Join(t.TempDir(), "flowpin")
	startAPI(t, dir2, &fakeSource{})
	if _, err := (ctl.Client{Dir: dir2, Trust: uint32(os.Geteuid())}).Intent(context.Background()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a source without intent: %v, want 404", err)
	}
}
