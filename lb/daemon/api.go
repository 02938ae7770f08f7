package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/ctl"
	"flowpin/lb/health"
	"flowpin/lb/nslock"
	"flowpin/lb/status"
)

// apiListener removes its socket file on Close, if the file is still the
// one it bound.
type apiListener struct {
	*net.UnixListener
	path string
	ino  uint64
	once sync.Once
}

func (l *apiListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		var st unix.Stat_t
		if unix.Lstat(l.path, &st) == nil && st.Ino == l.ino {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// ListenAPI claims this network namespace's socket in ctl.SocketDir. A
// second daemon in the same namespace fails here, before it touches
// anything; a socket file left by a daemon that was killed is replaced.
func ListenAPI() (net.Listener, error) {
	gid, mode := 0, os.FileMode(0o600)
	if g, err := user.LookupGroup(ctl.GroupName); err == nil {
		if _, err := fmt.Sscan(g.Gid, &gid); err == nil {
			mode = 0o660
		}
	}
	return listenAPI(ctl.SocketDir, gid, mode)
}

func listenAPI(dir string, gid int, mode os.FileMode) (net.Listener, error) {
	if err := nslock.OwnDir(dir); err != nil {
		return nil, err
	}
	path, err := ctl.SocketPath(dir)
	if err != nil {
		return nil, err
	}
	// Two daemons starting at once must not both find the socket dead and
	// replace each other's: the check and the replacement happen under
	// an exclusive lock on the directory.
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)

	switch alive, err := answers(path); {
	case err != nil:
		return nil, err
	case alive:
		return nil, fmt.Errorf("another flowpin run is active in this network namespace (%s answers)", path)
	}
	// Bind under a temporary name, set owner and mode, then rename over
	// the final name (replacing a dead daemon's socket): the socket is
	// never reachable under its name with the wrong permissions.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", tmp, err)
	}
	ln.SetUnlinkOnClose(false)
	var st unix.Stat_t
	if gid != os.Getegid() {
		// Giving a file to a group one is not in takes CAP_CHOWN.
		if err = os.Chown(tmp, -1, gid); err != nil {
			err = fmt.Errorf("give it to group %s (gid %d; this needs CAP_CHOWN): %w", ctl.GroupName, gid, err)
		}
	}
	if err == nil {
		err = errors.Join(os.Chmod(tmp, mode), unix.Lstat(tmp, &st))
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &apiListener{UnixListener: ln, path: path, ino: st.Ino}, nil
}

// answers tells whether a daemon of this user (root) listens on path.
// Only "connection refused" (nobody listens) or a missing file count as
// dead: a live daemon whose backlog is full answers EAGAIN, and must not
// be replaced. A socket served by another user (put there while the
// directory was not yet ours alone) is no daemon: it is replaced too.
func answers(path string) (bool, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		defer c.Close()
		cred, err := ctl.PeerCred(c.(*net.UnixConn))
		return err == nil && int(cred.Uid) == os.Geteuid(), nil
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("check for a running daemon on %s: %w", path, err)
}

// Source is what the API serves: the links' health, and the whole
// status as `flowpin status --json` prints it.
type Source interface {
	Health() []health.LinkHealth
	Status() (*status.Status, error)
}

// SourceFuncs makes a Source of two functions.
type SourceFuncs struct {
	HealthFunc func() []health.LinkHealth
	StatusFunc func() (*status.Status, error)
}

func (s SourceFuncs) Health() []health.LinkHealth     { return s.HealthFunc() }
func (s SourceFuncs) Status() (*status.Status, error) { return s.StatusFunc() }

// statusMaxAge: a status younger than this is served again rather than
// recomputed. A status costs O(links) from the daemon's counts, but a
// dump of the whole table until its first count is done; clients asking
// faster than this share one, so however many there are, the daemon
// computes at most one per statusMaxAge.
const statusMaxAge = 100 * time.Millisecond

// APIHandler answers GET /health (the links' health) and GET /status (the
// whole status, same JSON as `flowpin status --json`).
func APIHandler(src Source) http.Handler {
	mux := http.NewServeMux()
	if r, ok := src.(Reloader); ok {
		mux.HandleFunc("POST /reload", reloadHandler(r))
	}
	if ls, ok := src.(LinkSetter); ok {
		mux.HandleFunc("POST /links/{name}/{mode}", linkHandler(ls))
	}
	if in, ok := src.(Intender); ok {
		mux.HandleFunc("GET /intent", intentHandler(in))
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(src.Health())
	})
	mux.Handle("GET /status", statusHandler(src))
	return mux
}

// Intender is a Source that tells what the daemon last applied beyond
// the config (GET /intent, which verify plans with).
type Intender interface {
	Intent() (ctl.Intent, bool)
}

// intentHandler answers GET /intent: 503 until the first sync applied.
func intentHandler(in Intender) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		i, ok := in.Intent()
		if !ok {
			http.Error(w, "the daemon has not applied a plan yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(i)
	}
}

// statusHandler answers the whole status as JSON, recomputed at most once
// per statusMaxAge.
func statusHandler(src Source) http.HandlerFunc {
	var (
		mu     sync.Mutex
		last   *status.Status
		lastAt time.Time
	)
	return func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		if last == nil || time.Since(lastAt) >= statusMaxAge {
			st, err := src.Status()
			if err != nil {
				mu.Unlock()
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			last, lastAt = st, time.Now()
		}
		// Counts may be shared; the links' health is always the latest.
		st := *last
		st.Links = slices.Clone(last.Links)
		mu.Unlock()
		st.WithHealth(src.Health())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&st)
	}
}

// ServeAPI answers the API on ln until ctx ends; owners name the local
// user behind a TCP client (Serve).
func ServeAPI(ctx context.Context, ln net.Listener, src Source, owners SocketOwners) error {
	return Serve(ctx, ln, APIHandler(src), owners)
}

// limits bound what the clients of one server can hold.
type limits struct {
	// MaxConns connections are served at once; more are closed as soon
	// as they are accepted.
	MaxConns int
	// PerClient of them at most go to one client (0: no such cap): one
	// user, when the kernel names the client's user (see kernelClient),
	// else one address. A client holding its share cannot keep the
	// others out.
	PerClient int
	// RootConns more are kept for clients the kernel says run as root
	// (on the unix socket, and local TCP clients), who are not held to
	// PerClient: a member of group flowpin, or any local user on the
	// metrics port, holding every ordinary slot cannot lock root out.
	RootConns int
	// A connection that sends no complete request header in ReadHeader,
	// or stays idle between requests longer than Idle, is closed.
	ReadHeader, Read, Write, Idle time.Duration
	// Conn is the whole life of a connection: it is closed Conn after it
	// was accepted, whatever it is doing. The timeouts above are armed
	// again for each request, so without it a client trickling one slow
	// request after another would keep its slot for ever.
	Conn           time.Duration
	MaxHeaderBytes int
}

// defaultLimits are for a handful of local clients (flowpin status, a
// Prometheus scraper, a browser on the status page). Write leaves time to
// dump a large conntrack table; Conn leaves time for one such request.
var defaultLimits = limits{
	MaxConns:       16,
	PerClient:      4,
	RootConns:      4,
	ReadHeader:     2 * time.Second,
	Read:           5 * time.Second,
	Write:          30 * time.Second,
	Idle:           5 * time.Second,
	Conn:           40 * time.Second,
	MaxHeaderBytes: 8 << 10,
}

// Serve answers h on ln until ctx ends, within defaultLimits. Every
// server of the daemon goes through here, so no client, however many
// connections it opens and however long it holds them, can take more
// than its share of MaxConns descriptors and their buffers from the
// daemon, whose control loop needs descriptors for its own syncs and
// probes. owners name the local user behind a TCP client.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, owners SocketOwners) error {
	return serve(ctx, ln, h, defaultLimits, kernelClient(owners))
}

// serve answers h on ln within lim, telling clients apart with who.
func serve(ctx context.Context, ln net.Listener, h http.Handler, lim limits, who func(net.Conn) client) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeader,
		ReadTimeout:       lim.Read,
		WriteTimeout:      lim.Write,
		IdleTimeout:       lim.Idle,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*capConn); ok {
				ctx = context.WithValue(ctx, clientKey{}, cc.client)
			}
			return connPeer(ctx, c)
		},
	}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	err := srv.Serve(&capListener{Listener: ln, lim: lim, who: who, per: map[string]int{}})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type clientKey struct{}

// clientOf is who sent r, as the server's listener saw it.
func clientOf(r *http.Request) client {
	c, _ := r.Context().Value(clientKey{}).(client)
	return c
}

// capListener accepts at most lim.MaxConns connections at once (and
// lim.PerClient per client, lim.RootConns more for root) and closes the
// ones beyond at once. golang.org/x/net/netutil.LimitListener would
// instead stop accepting, leaving the excess queued in the kernel: behind
// thousands of queued idle connections a real client would wait minutes,
// and the queue would drain only one timeout per batch; nor can it tell
// clients apart.
type capListener struct {
	net.Listener
	lim limits
	who func(net.Conn) client

	mu   sync.Mutex
	used int
	per  map[string]int
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		// When even root's slots are taken, close before asking the
		// kernel who it is: a flood costs an accept and a close.
		if l.full() {
			c.Close()
			continue
		}
		who := l.who(c)
		if !l.take(who) {
			c.Close()
			continue
		}
		cc := &capConn{Conn: c, client: who, release: func() { l.release(who) }}
		if l.lim.Conn > 0 {
			cc.end = time.Now().Add(l.lim.Conn)
			_ = c.SetDeadline(cc.end)
		}
		return cc, nil
	}
}

func (l *capListener) full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used >= l.lim.MaxConns+l.lim.RootConns
}

// take counts a connection of who, or says there is no slot for it.
func (l *capListener) take(who client) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if who.root() {
		if l.used >= l.lim.MaxConns+l.lim.RootConns {
			return false
		}
	} else if l.used >= l.lim.MaxConns || (l.lim.PerClient > 0 && l.per[who.key] >= l.lim.PerClient) {
		return false
	}
	l.used++
	l.per[who.key]++
	return true
}

func (l *capListener) release(who client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.used--
	if l.per[who.key]--; l.per[who.key] <= 0 {
		delete(l.per, who.key)
	}
}

// capConn is an accepted connection holding its slot until closed, and
// its deadlines never later than end: the server sets them again for
// each request, and must not push them past the connection's life.
type capConn struct {
	net.Conn
	client  client
	end     time.Time // zero: no limit
	once    sync.Once
	release func()
}

// Close gives the slot back first: a client that saw its connection
// closed and dials again at once finds it free.
func (c *capConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func (c *capConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *capConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *capConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

// clamp is t, or end if t is later (or none).
func (c *capConn) clamp(t time.Time) time.Time {
	if !c.end.IsZero() && (t.IsZero() || t.After(c.end)) {
		return c.end
	}
	return t
}
