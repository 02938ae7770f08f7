package daemon

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
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

// RegisterStatusPage adds, read-only, GET / (the status page) and GET
// /status.json (the same JSON as `flowpin status --json`, recomputed at
// most once a second) to mux, the daemon's --metrics listener. Nothing
// served there changes state: that takes the CLI.
func RegisterStatusPage(mux *http.ServeMux, src Source) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", pageETag)
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(statusPage))
	})
	js := statusHandler(src)
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		js(w, r)
	})
}
