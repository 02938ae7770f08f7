package integration

import (
	"testing"
	"time"
)

// scrapeUntil scrapes the daemon's /metrics until ok says the body is as
// wanted, or limit passed; it returns the last body. The metrics trail
// what status says: a link is down in status at once, its sync (and
// what that counts) follows, and a loaded machine takes its time.
func scrapeUntil(t testing.TB, ns, addr string, limit time.Duration, ok func(body string) bool) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		body, err := scrape(t, ns, addr)
		if err == nil && ok(body) {
			return body
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("scrape %s: %v", addr, err)
			}
			return body
		}
		time.Sleep(100 * time.Millisecond)
	}
}
