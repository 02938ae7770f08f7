// Package ctl is the client of the daemon's socket: `flowpin run` answers
// HTTP on a unix socket, one per network namespace, and the CLI (status,
// reload, use) asks it there. The daemon's side of the socket (lb/daemon)
// shares its name, its group and the kernel's word on who is at the other
// end (PeerCred) from here; this package knows nothing of the daemon.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/health"
	"flowpin/lb/nslock"
	"flowpin/lb/status"
)

// SocketDir holds the daemons' sockets, one per network namespace. Only
// root can create files in it (0755, owned by root), so no other user can
// bind a socket there before the daemon does and answer in its place.
//
// A unix socket in the file system is reachable from every network
// namespace, unlike an abstract one; so each socket is named after the
// namespace it serves (SocketPath), and `ip netns exec NS flowpin status`
// finds the socket of NS because it runs in NS. /run is not part of what
// `ip netns exec` changes (it bind-mounts only /etc/netns/NS/* and /sys:
// ip-netns(8)).
const SocketDir = nslock.DefaultDir

// GroupName is the group whose members may read the daemon's status
// through its socket. When it does not exist, only root may.
const GroupName = "flowpin"

var (
	// ErrNoDaemon: no `flowpin run` in this network namespace. It is
	// status's: a status collected without a daemon says the links'
	// states are unknown.
	ErrNoDaemon = status.ErrNoDaemon
	// ErrNotPermitted: the socket exists but this user may not open it.
	ErrNotPermitted = errors.New("not permitted to read the flowpin daemon's status: join group " + GroupName + " or run as root")
)

// SocketPath is the socket for the network namespace this process is in,
// in dir: named after the namespace's identity (nslock.ID), like its locks.
func SocketPath(dir string) (string, error) {
	id, err := nslock.ID()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, id+".sock"), nil
}

// PeerCred reads the credentials of the process at the other end of a
// unix socket as the kernel recorded them (socket(7) SO_PEERCRED): for a
// client, the process that created the listening socket; for the server,
// the one that connected.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// Client asks the daemon of this network namespace. The zero value asks
// the one whose socket is in SocketDir, served by root.
type Client struct {
	// Dir holds the socket ("": SocketDir).
	Dir string
	// Trust is the uid the socket's server must run as (0: root). Nobody
	// else may speak for the daemon.
	Trust uint32
}

var _ status.LinkHealth = Client{}

// Health asks for the daemon's view of the links (status.LinkHealth).
func (c Client) Health(ctx context.Context) ([]health.LinkHealth, error) {
	var out []health.LinkHealth
	return out, c.get(ctx, "/health", &out)
}

// Status asks for the whole status, as `flowpin status --json` prints it.
func (c Client) Status(ctx context.Context) (*status.Status, error) {
	var out status.Status
	if err := c.get(ctx, "/status", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Reload asks the daemon to reload its config and returns its answer: nil
// when applied, its reason when refused.
func (c Client) Reload(ctx context.Context) error {
	return c.post(ctx, "/reload")
}

// LinkMode is the daemon's answer to SetLink: the mode now set and since
// when.
type LinkMode struct {
	Mode  string    `json:"mode"`
	Since time.Time `json:"since"`
}

// SetLink asks the daemon to set link name's operator mode (drain, down,
// up or auto) and waits until it is applied; force takes out the last
// link too. The error is the daemon's reason when refused.
func (c Client) SetLink(ctx context.Context, name, mode string, force bool) error {
	path := "/links/" + url.PathEscape(name) + "/" + url.PathEscape(mode)
	if force {
		path += "?force=1"
	}
	return c.post(ctx, path)
}

// Intent is what the daemon last applied beyond the config: the links it
// took out of the IPv4 and IPv6 multipath routes, each with its reason
// (health checks, an operator's drain or down, a quota), and the IPv6
// prefixes it holds for a link that is down. verify plans with it, so
// that a link the daemon took out is no drift.
type Intent struct {
	Down  map[string]string `json:"down,omitempty"`
	Down6 map[string]string `json:"down6,omitempty"`
	Held6 []netip.Prefix    `json:"held6,omitempty"`
}

// Intent asks what the daemon last applied beyond the config.
func (c Client) Intent(ctx context.Context) (*Intent, error) {
	var out Intent
	if err := c.get(ctx, "/intent", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

const (
	// A question is answered from memory, or at worst with one dump of
	// the conntrack table.
	getTimeout = 5 * time.Second
	// A command (reload) applies the config: allow it the time of a sync.
	postTimeout = time.Minute
	// maxAnswer bounds what is read of an answer.
	maxAnswer = 16 << 20
)

// get GETs path and decodes the JSON answer into out.
func (c Client) get(ctx context.Context, path string, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, getTimeout)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The body is the daemon's error message, to be shown to the
		// user: escaped, one line, short.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("the daemon answered %d: %s", resp.StatusCode, status.Printable(string(b)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out); err != nil {
		return fmt.Errorf("decode the daemon's answer: %w", err)
	}
	return nil
}

// post POSTs path, a command: nil when the daemon did it, else its reason
// (escaped) as the error.
func (c Client) post(ctx context.Context, path string) error {
	resp, err := c.do(ctx, http.MethodPost, path, postTimeout)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return errors.New(status.Printable(strings.TrimSpace(string(b))))
	}
	return nil
}

// socket is the path of the socket c asks.
func (c Client) socket() (string, error) {
	if c.Dir == "" {
		return SocketPath(SocketDir)
	}
	return SocketPath(c.Dir)
}

// do sends one request over the socket, on a connection of its own.
func (c Client) do(ctx context.Context, method, path string, timeout time.Duration) (*http.Response, error) {
	sock, err := c.socket()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialTrusted(ctx, sock, c.Trust)
			},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://flowpin"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *untrustedError
		switch {
		case errors.Is(err, ErrNoDaemon):
			return nil, ErrNoDaemon
		case errors.Is(err, ErrNotPermitted):
			return nil, ErrNotPermitted
		case errors.As(err, &ue):
			return nil, ue
		}
		return nil, fmt.Errorf("ask the daemon: %w", err)
	}
	return resp, nil
}

type untrustedError struct {
	path string
	uid  uint32
}

func (e *untrustedError) Error() string {
	return fmt.Sprintf("%s is served by uid %d, not by root: ignoring it (someone else's process; remove the socket and restart flowpin run)", e.path, e.uid)
}

// dialTrusted connects to the socket and checks, with SO_PEERCRED, that
// the process serving it runs as uid trust (root): nobody else may speak
// for the daemon.
func dialTrusted(ctx context.Context, path string, trust uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil, ErrNoDaemon
	case errors.Is(err, os.ErrPermission):
		return nil, ErrNotPermitted
	case err != nil:
		return nil, err
	}
	cred, err := PeerCred(c.(*net.UnixConn))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("credentials of %s: %w", path, err)
	}
	if cred.Uid != trust {
		c.Close()
		return nil, &untrustedError{path: path, uid: cred.Uid}
	}
	return c, nil
}
