package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"flowpin/lb/health"
)

// SocketName is the abstract unix socket the daemon answers on. Abstract
// sockets belong to the network namespace, so `ip netns exec NS flowpin
// status` finds the daemon of NS and no other, with no file to clean up.
const SocketName = "@flowpin"

// ErrNoDaemon: no `flowpin run` in this network namespace.
var ErrNoDaemon = errors.New("no flowpin daemon runs in this network namespace")

// ListenAPI claims the daemon's socket. A second daemon in the same
// namespace fails here, before it touches anything.
func ListenAPI() (net.Listener, error) {
	ln, err := net.Listen("unix", SocketName)
	if err != nil {
		return nil, fmt.Errorf("claim %s (is another flowpin run active in this namespace?): %w", SocketName, err)
	}
	return ln, nil
}

// ServeAPI answers GET /health with the links' health as JSON until ctx
// ends.
func (d *Daemon) ServeAPI(ctx context.Context, ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d.Health())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	_ = srv.Serve(ln)
}

// QueryHealth asks this namespace's daemon for its view of the links.
func QueryHealth(ctx context.Context) ([]health.LinkHealth, error) {
	c := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", SocketName)
		}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://flowpin/health", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, ErrNoDaemon
		}
		return nil, fmt.Errorf("ask the daemon: %w", err)
	}
	defer resp.Body.Close()
	var out []health.LinkHealth
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode the daemon's answer: %w", err)
	}
	return out, nil
}
