package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"flowpin/lb/health"
	"flowpin/lb/status"
)

// daemonAt serves h on the socket Client{Dir: dir} asks, until the test
// ends, and records each request's method and path.
func daemonAt(t *testing.T, dir string, h http.Handler) *[]string {
	t.Helper()
	path, err := SocketPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []string
	)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		h.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return &seen
}

// fakeDaemon answers as the daemon's API does.
func fakeDaemon() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `[{"name":"isp1","state":"up","reason":"ok"}]`)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"schema":1,"daemon":true,"links":[{"name":"isp1","state":"up","flows":3}]}`)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "reloaded\n")
	})
	return mux
}

func me(dir string) Client { return Client{Dir: dir, Trust: uint32(os.Geteuid())} }

func TestClientAsks(t *testing.T) {
	dir := t.TempDir()
	seen := daemonAt(t, dir, fakeDaemon())
	c, ctx := me(dir), context.Background()

	h, err := c.Health(ctx)
	if err != nil || len(h) != 1 || h[0].Name != "isp1" || h[0].State != health.StateUp || h[0].Reason != "ok" {
		t.Errorf("Health: %v %+v", err, h)
	}
	st, err := c.Status(ctx)
	if err != nil || !st.Daemon || st.Schema != status.StatusSchema || len(st.Links) != 1 || st.Links[0].Flows != 3 {
		t.Errorf("Status: %v %+v", err, st)
	}
	if err := c.Reload(ctx); err != nil {
		t.Errorf("Reload: %v", err)
	}
	want := []string{"GET /health", "GET /status", "POST /reload"}
	if strings.Join(*seen, ", ") != strings.Join(want, ", ") {
		t.Errorf("the daemon was asked %q, want %q", *seen, want)
	}
}

// No daemon: no socket file, or one nobody listens on (a daemon killed
// with SIGKILL leaves it).
func TestClientNoDaemon(t *testing.T) {
	dir := t.TempDir()
	c, ctx := me(dir), context.Background()
	if _, err := c.Health(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no socket: %v, want ErrNoDaemon", err)
	}
	path, err := SocketPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the dead socket is gone: %v", err)
	}
	if _, err := c.Status(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("dead socket: %v, want ErrNoDaemon", err)
	}
	if err := c.Reload(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("reload, dead socket: %v, want ErrNoDaemon", err)
	}
}

// A server running as another user than the one trusted is not believed,
// and is not asked anything. (The product trusts uid 0; here the server's
// uid is compared with another one.)
func TestClientUntrustedServer(t *testing.T) {
	dir := t.TempDir()
	seen := daemonAt(t, dir, fakeDaemon())
	uid := uint32(os.Geteuid())
	c := Client{Dir: dir, Trust: uid + 1}
	for name, ask := range map[string]func() error{
		"health": func() error { _, err := c.Health(context.Background()); return err },
		"reload": func() error { return c.Reload(context.Background()) },
	} {
		err := ask()
		var ue *untrustedError
		if !errors.As(err, &ue) || ue.uid != uid || !strings.Contains(err.Error(), "not by root") {
			t.Errorf("%s: server uid %d, trusting uid %d: %v", name, uid, uid+1, err)
		}
	}
	if len(*seen) != 0 {
		t.Errorf("an untrusted server was asked %q", *seen)
	}
}

// What the daemon says when it refuses reaches the user escaped: it comes
// from another process and is printed on a terminal.
func TestClientRefusals(t *testing.T) {
	dir := t.TempDir()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "the daemon is starting\x1b[2J", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"schema":`)
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "f.yaml:3: links[0].weight: 0 is out of range (1..256)\x1b]0;owned\x07", http.StatusUnprocessableEntity)
	})
	daemonAt(t, dir, mux)
	c, ctx := me(dir), context.Background()

	_, err := c.Health(ctx)
	if err == nil || err.Error() != `the daemon answered 503: the daemon is starting\x1b[2J\x0a` {
		t.Errorf("health refused: %v", err)
	}
	if _, err := c.Status(ctx); err == nil || !strings.HasPrefix(err.Error(), "decode the daemon's answer: ") {
		t.Errorf("status cut short: %v", err)
	}
	err = c.Reload(ctx)
	if err == nil || err.Error() != `f.yaml:3: links[0].weight: 0 is out of range (1..256)\x1b]0;owned\x07` {
		t.Errorf("reload refused: %v", err)
	}
}

// The zero Client asks the daemon's socket in /run/flowpin, named after
// the network namespace.
func TestClientDefaultSocket(t *testing.T) {
	path, err := Client{}.socket()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("/run/flowpin/net-%x-%d.sock", st.Dev, st.Ino); path != want {
		t.Errorf("socket %s, want %s", path, want)
	}
	if other, _ := (Client{Dir: "/tmp/x"}).socket(); other != "/tmp/x/"+filepath.Base(path) {
		t.Errorf("socket in /tmp/x: %s", other)
	}
}
