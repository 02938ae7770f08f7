package daemon

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

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
	RegisterStatusPage(mux, src)
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
