package daemon

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"flowpin/lb/health"
	"flowpin/lb/status"
)

func TestStatusPage(t *testing.T) {
	var calls atomic.Int32
	src := SourceFuncs{
		HealthFunc: func() []health.LinkHealth { return nil },
		StatusFunc: func() (*status.Status, error) {
			calls.Add(1)
			return &status.Status{Schema: status.StatusSchema, Daemon: true, Links: []status.LinkStatus{{Name: "isp1", State: health.StateUp}}}, nil
		},
	}
	mux := http.NewServeMux()
	registerStatusPage(mux, src, func(h http.Handler) http.Handler { return h })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := srv.Client()

	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	page := string(statusPage)
	// The CSP names the hashes of exactly the page's script and style, or
	// the browser would refuse to run them.
	csp := resp.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(page)
		sum := sha256.Sum256([]byte(m[1]))
		if want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	// One file: nothing loaded from anywhere else.
	for _, bad := range []string{"<link", " src=", "@import", "url(", `href="http`, "//cdn"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must load nothing else", bad)
		}
	}
	// Read-only: no forms, no requests but GET of status.json.
	for _, bad := range []string{"<form", "method:", "POST", "PUT", "DELETE"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must be read-only", bad)
		}
	}

	var st status.Status
	for range 2 {
		r, err := c.Get(srv.URL + "/status.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	if st.Schema != status.StatusSchema || len(st.Links) != 1 || st.Links[0].Name != "isp1" || st.Links[0].State != health.StateUp {
		t.Errorf("status.json = %+v", st)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("two requests back to back computed the status %d times, want 1 (statusMaxAge)", n)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		for _, p := range []string{"/", "/status.json"} {
			req, _ := http.NewRequest(m, srv.URL+p, strings.NewReader("{}"))
			r, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %s, want 405", m, p, r.Status)
			}
		}
	}
	r, err := c.Get(srv.URL + "/other")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %s, want 404", r.Status)
	}
}

func TestHostAllowed(t *testing.T) {
	lan := &net.TCPAddr{IP: net.ParseIP("10.77.0.1"), Port: 9108}
	lo := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9108}
	lo6 := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 9108}
	web80 := &net.TCPAddr{IP: net.ParseIP("10.77.0.1"), Port: 80}
	extra, err := parseHosts([]string{"Router.Example", "proxy.example:8443", "[fd00::1]:9000", "192.0.2.9"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host   string
		local  *net.TCPAddr
		listen string
		want   bool
	}{
		// What Prometheus and a browser send when they are given the
		// listener's own address.
		{"127.0.0.1:9108", lo, "127.0.0.1", true},
		{"localhost:9108", lo, "127.0.0.1", true},
		{"LOCALHOST.:9108", lo, "127.0.0.1", true},
		{"[::1]:9108", lo6, "::1", true},
		{"[::1]:9108", lo, "127.0.0.1", true},
		{"127.0.0.1:9108", lo6, "::1", true},
		// Bound to every address: the one the client connected to.
		{"10.77.0.1:9108", lan, "0.0.0.0", true},
		{"10.77.0.2:9108", lan, "0.0.0.0", false},
		{"0.0.0.0:9108", lan, "0.0.0.0", false},
		// Bound by name.
		{"router.lan:9108", lan, "router.lan", true},
		{"router.lan:9108", lan, "", false},
		// The port is the listener's.
		{"localhost:9109", lo, "127.0.0.1", false},
		{"localhost", lo, "127.0.0.1", false},
		{"10.77.0.1", web80, "10.77.0.1", true},
		{"10.77.0.1:80", web80, "10.77.0.1", true},
		// DNS rebinding: another site's name.
		{"evil.example:9108", lo, "127.0.0.1", false},
		{"127.0.0.1.evil.example:9108", lo, "127.0.0.1", false},
		{"localhost.evil.example:9108", lo, "127.0.0.1", false},
		{"", lo, "127.0.0.1", false},
		// --metrics-host: NAME with any port, NAME:PORT with that one.
		{"router.example:9108", lo, "127.0.0.1", true},
		{"router.example", lan, "0.0.0.0", true},
		{"ROUTER.example:443", lan, "0.0.0.0", true},
		{"proxy.example:8443", lan, "0.0.0.0", true},
		{"proxy.example:9108", lan, "0.0.0.0", false},
		{"[fd00::1]:9000", lan, "0.0.0.0", true},
		{"[fd00:0::1]:9000", lan, "0.0.0.0", true},
		{"[fd00::1]:9108", lan, "0.0.0.0", false},
		{"192.0.2.9:1", lan, "0.0.0.0", true},
		// Without the connection's address, only --metrics-host names.
		{"localhost:9108", nil, "127.0.0.1", false},
		{"router.example", nil, "127.0.0.1", true},
	} {
		listen, _, _ := splitHost(c.listen)
		if a, err := netip.ParseAddr(listen); err == nil && a.IsUnspecified() {
			listen = ""
		}
		if got := hostAllowed(c.host, c.local, listen, extra); got != c.want {
			t.Errorf("Host %q on %v (listening on %q): allowed %v, want %v", c.host, c.local, c.listen, got, c.want)
		}
	}
}

func TestParseHosts(t *testing.T) {
	for _, bad := range []string{"", "a/b", "name:0", "name:99999", "name:http", "user@name", "[fd00::1", "a b"} {
		if _, err := parseHosts([]string{bad}); err == nil || !strings.Contains(err.Error(), "--metrics-host") {
			t.Errorf("--metrics-host %q: %v, want an error naming the flag", bad, err)
		}
	}
	got, err := parseHosts([]string{"Router.LAN.", "fd00::1", "[fd00::1]:8080", "router:9108"})
	if err != nil {
		t.Fatal(err)
	}
	want := []hostName{{"router.lan", ""}, {"fd00::1", ""}, {"fd00::1", "8080"}, {"router", "9108"}}
	if !slices.Equal(got, want) {
		t.Errorf("parseHosts = %v, want %v", got, want)
	}
}

// webServer serves webHandler on 127.0.0.1 for a test, telling clients
// apart by their source address with who.
func webServer(t *testing.T, o WebOptions, who func(net.Conn) client, may func(client) bool) string {
	t.Helper()
	src := &fakeSource{health: []health.LinkHealth{{Name: "isp1", State: health.StateUp}}}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "flowpin_up 1\n") })
	h, err := webHandler(metrics, src, o, may)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, h, defaultLimits, who) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// get sends one request for path to addr from the local address from
// (127.0.0.x), with the Host header host, and returns the answer's code
// and body.
func get(t *testing.T, addr, from, host, path string) (int, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	hostLine := ""
	if host != "" {
		hostLine = "Host: " + host + "\r\n"
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\n%s\r\n", path, hostLine); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s from %s, Host %q: %v", path, from, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A page of another site that a browser reaches through DNS rebinding
// names that site in its Host header: refused, on every path; the
// listener's own address and localhost are served.
func TestWebHostHeader(t *testing.T) {
	root := func(net.Conn) client { return userClient(0) }
	addr := webServer(t, WebOptions{ListenHost: "127.0.0.1", Hosts: []string{"router.example"}}, root, mayReadStatus)
	_, port, _ := net.SplitHostPort(addr)
	for _, path := range []string{"/", "/status.json", "/metrics"} {
		for _, host := range []string{addr, "localhost:" + port, "[::1]:" + port, "router.example", "router.example:" + port} {
			if code, body := get(t, addr, "127.0.0.1", host, path); code != http.StatusOK {
				t.Errorf("GET %s, Host %q: %d %s, want 200", path, host, code, body)
			}
		}
		for _, host := range []string{"evil.example:" + port, "evil.example", "localhost:1", "127.0.0.1.evil.example:" + port, ""} {
			code, body := get(t, addr, "127.0.0.1", host, path)
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, "--metrics-host") || len(body) > 200 {
				t.Errorf("GET %s, Host %q: %d %q, want 421 and a short reason", path, host, code, body)
			}
		}
	}
}

// The status page and /status.json answer whom the socket answers: root,
// and members of group flowpin, as the kernel names them. A client from
// another host, whose user no kernel here can name, only when the
// operator opens the status to all. /metrics answers everyone.
func TestWebStatusAccess(t *testing.T) {
	const member = 1001
	// Source addresses stand for what the kernel would say.
	who := func(c net.Conn) client {
		switch c.RemoteAddr().(*net.TCPAddr).IP.String() {
		case "127.0.0.2":
			return userClient(0)
		case "127.0.0.3":
			return userClient(member)
		case "127.0.0.4":
			return userClient(1000)
		}
		return addrClient(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
	}
	may := func(c client) bool { return c.known && (c.uid == 0 || c.uid == member) }
	for _, public := range []bool{false, true} {
		addr := webServer(t, WebOptions{ListenHost: "127.0.0.1", PublicStatus: public}, who, may)
		for _, c := range []struct {
			from   string
			status bool
		}{
			{"127.0.0.2", true},   // root
			{"127.0.0.3", true},   // group flowpin
			{"127.0.0.4", public}, // another local user
			{"127.0.0.5", public}, // another host
		} {
			for _, path := range []string{"/", "/status.json", "/metrics"} {
				want := http.StatusOK
				if !c.status && path != "/metrics" {
					want = http.StatusForbidden
				}
				code, body := get(t, addr, c.from, addr, path)
				if code != want {
					t.Errorf("public %v: GET %s from %s (%+v): %d %q, want %d", public, path, c.from, who(fakeConn{c.from}), code, body, want)
				}
				if code == http.StatusForbidden && !strings.Contains(body, "group flowpin") {
					t.Errorf("403 %q does not say who may read it", body)
				}
			}
		}
	}
}

// fakeConn has a remote address and nothing else.
type fakeConn struct{ ip string }

func (f fakeConn) RemoteAddr() net.Addr           { return &net.TCPAddr{IP: net.ParseIP(f.ip), Port: 1} }
func (fakeConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (fakeConn) Write(b []byte) (int, error)      { return len(b), nil }
func (fakeConn) Close() error                     { return nil }
func (fakeConn) LocalAddr() net.Addr              { return nil }
func (fakeConn) SetDeadline(time.Time) error      { return nil }
func (fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (fakeConn) SetWriteDeadline(time.Time) error { return nil }

// The page reads the status fields of what issues 22 to 24 added, under
// the names status.json gives them: a renamed field would leave the page
// silently blank (TestStatusPageInBrowser sees them drawn).
func TestStatusPageReadsNewFields(t *testing.T) {
	in := true
	st := status.Status{
		Links: []status.LinkStatus{{
			Name: "isp1", Operator: "drain", OperatorSince: &time.Time{}, QuotaWarning: "w",
			Quota:     &health.QuotaUsage{Bytes: 1, Used: 1},
			Prefixes6: []status.Prefix6Status{{Prefix: "2001:db8::/56", OwnLink: true, Translated: true, To: []status.Prefix6MapStatus{{Link: "isp2", Prefix: "2001:db8:1::/56"}}}},
			DNS:       []status.DNSStatus{{Address: "192.0.2.53", InResolv: &in}}, DNSAuto: true,
		}},
		Sets: []status.SetStatus{{Name: "office", Kind: "file", Resolve: true, Domains: []string{"a"}, Files: []string{"f"}, Rules: []string{"r"}}},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	js := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindStringSubmatch(string(statusPage))[1]
	for _, f := range []string{"operator", "operator_since", "quota", "used", "left", "bytes", "period_end", "quota_warning",
		"prefixes6", "prefix", "own_link", "translated", "to", "link", "dns", "address", "in_resolv", "dns_auto",
		"sets", "name", "kind", "resolve", "domains", "files", "rules", "elements_ipv4", "elements_ipv6"} {
		if !strings.Contains(string(b), `"`+f+`":`) {
			t.Errorf("status.json has no field %q", f)
		}
		if !regexp.MustCompile(`\.` + f + `\b`).MatchString(js) {
			t.Errorf("the page does not read %q", f)
		}
	}
}
