package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// statusPage is the status page: one file with its own style and script,
// no external assets (a router may have no way to a CDN) and no build
// step. Its script polls status.json and keeps the graphs' history in the
// browser.
//
//go:embed web/index.html
var statusPage []byte

// pageCSP lets the page run its own inline script and style (by hash) and
// fetch from its own origin, and nothing else: no other script, frame,
// form or image source.
var pageCSP = func() string {
	hash := func(tag string) string {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindSubmatch(statusPage)
		if m == nil {
			panic("status page has no <" + tag + ">")
		}
		sum := sha256.Sum256(m[1])
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + hash("script") + "; style-src " + hash("style") +
		"; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

var pageETag = fmt.Sprintf(`"%x"`, sha256.Sum256(statusPage))

// registerStatusPage adds, read-only, GET / (the status page) and GET
// /status.json (the same JSON as `flowpin status --json`, recomputed at
// most once a second) to mux, each behind guard. Nothing served there
// changes state: that takes the CLI.
func registerStatusPage(mux *http.ServeMux, src Source, guard func(http.Handler) http.Handler) {
	mux.Handle("GET /{$}", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", pageETag)
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(statusPage))
	})))
	js := statusHandler(src)
	mux.Handle("GET /status.json", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		js(w, r)
	})))
}

// WebOptions are the rules of the daemon's HTTP listener (--metrics).
type WebOptions struct {
	// ListenHost is the host of the listen address as the operator gave
	// it (a name, an address, or a wildcard).
	ListenHost string
	// Hosts are more names the Host header may carry (--metrics-host):
	// "NAME" with any port, or "NAME:PORT".
	Hosts []string
	// PublicStatus serves the status page and /status.json to every
	// client that reaches the listener; without it, only to local users
	// who may read the daemon's socket (mayReadStatus).
	PublicStatus bool
}

// Check says what is wrong with o's names, if anything.
func (o WebOptions) Check() error {
	_, err := parseHosts(o.Hosts)
	return err
}

// ServeWeb answers, on ln until ctx ends, GET /metrics with metrics, and
// the status page and /status.json from src; within the limits of every
// server of the daemon (Serve), to requests whose Host header names this
// listener (hostGuard). /metrics answers every client that reaches ln, as
// a Prometheus scraper expects; the status, only those o allows. owners
// name the local user behind a TCP client.
func ServeWeb(ctx context.Context, ln net.Listener, metrics http.Handler, src Source, o WebOptions, owners SocketOwners) error {
	h, err := webHandler(metrics, src, o, mayReadStatus)
	if err != nil {
		return err
	}
	return serve(ctx, ln, h, defaultLimits, kernelClient(owners))
}

func webHandler(metrics http.Handler, src Source, o WebOptions, may func(client) bool) (http.Handler, error) {
	hosts, err := parseHosts(o.Hosts)
	if err != nil {
		return nil, err
	}
	guard := func(h http.Handler) http.Handler { return h }
	if !o.PublicStatus {
		guard = func(h http.Handler) http.Handler { return statusGuard(h, may) }
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	registerStatusPage(mux, src, guard)
	return hostGuard(mux, o.ListenHost, hosts), nil
}

// statusGuard answers h only to clients may allows. The socket lets root
// and group flowpin read the status; the kernel names the user behind a
// TCP connection only when it comes from this network namespace, so a
// client elsewhere gets the status only when the operator opens it to all
// (--public-status).
func statusGuard(h http.Handler, may func(client) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !may(clientOf(r)) {
			http.Error(w, "flowpin: the status is for root and group flowpin on this host (see flowpin run --public-status)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostName is a name or address the Host header may carry, and its port
// ("": any).
type hostName struct{ name, port string }

// parseHosts reads --metrics-host values: NAME, NAME:PORT, an address, or
// [IPv6]:PORT.
func parseHosts(hosts []string) ([]hostName, error) {
	var out []hostName
	for _, h := range hosts {
		name, port, ok := splitHost(h)
		if ok && port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				ok = false
			}
		}
		if !ok {
			return nil, fmt.Errorf("--metrics-host %q: want NAME or NAME:PORT", h)
		}
		out = append(out, hostName{name, port})
	}
	return out, nil
}

// splitHost splits a Host header (or a --metrics-host value) into a name,
// lower case and without a final dot, or an address, without brackets or
// zone; and a port ("" if none).
func splitHost(h string) (name, port string, ok bool) {
	name, port, err := net.SplitHostPort(h)
	if err != nil {
		name, port = h, ""
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			name = h[1 : len(h)-1]
		}
	}
	if a, err := netip.ParseAddr(name); err == nil {
		return a.Unmap().WithZone("").String(), port, true
	}
	if name == "" || strings.ContainsAny(name, ":[]/@\\ \t") {
		return "", "", false
	}
	return strings.TrimSuffix(strings.ToLower(name), "."), port, true
}

// hostGuard answers h only to requests whose Host header names this
// listener: localhost or a loopback address, the address the client
// connected to, or the listen address as given, each with the listener's
// port; or one of hosts. A page a browser loaded from another site,
// reaching this port through DNS rebinding (its name now resolving to this
// host), carries that site's name, and is refused (421).
func hostGuard(h http.Handler, listenHost string, hosts []hostName) http.Handler {
	listenName, _, _ := splitHost(listenHost)
	if a, err := netip.ParseAddr(listenName); err == nil && a.IsUnspecified() {
		listenName = "" // the address the client connected to stands for it
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
		if !hostAllowed(r.Host, local, listenName, hosts) {
			http.Error(w, "flowpin: this listener does not answer for that Host (add the name with flowpin run --metrics-host)", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func hostAllowed(host string, local *net.TCPAddr, listenName string, hosts []hostName) bool {
	name, port, ok := splitHost(host)
	if !ok || name == "" {
		return false
	}
	for _, h := range hosts {
		if h.name == name && (h.port == "" || h.port == port) {
			return true
		}
	}
	if local == nil {
		return false
	}
	// Without a port, a browser means http's own, 80.
	if lp := strconv.Itoa(local.Port); port != lp && (port != "" || lp != "80") {
		return false
	}
	if name == "localhost" || (listenName != "" && name == listenName) {
		return true
	}
	a, err := netip.ParseAddr(name)
	if err != nil {
		return false
	}
	la, _ := netip.AddrFromSlice(local.IP)
	return a.IsLoopback() || a == la.Unmap()
}
