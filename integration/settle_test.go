package integration

import (
	"strings"
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

// waitLogged waits until the daemon has logged msg more than n times (n:
// the count before the event waited for). Status shows a link's new
// state a moment before the sync that acts on it (moves the routes,
// flushes flows) has run; its log line says it has.
func (dm *daemon) waitLogged(t testing.TB, msg string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for strings.Count(dm.logs(), msg) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d times after %v, want more than %d:\n%s", msg, strings.Count(dm.logs(), msg), limit, n, dm.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitBalance waits until the IPv4 balance route (table 100, as the test
// configs have it) has dev in it, or not. Status shows a link's new state
// a moment before the sync moves the route: flows dialled in between
// take the old route.
func waitBalance(t testing.TB, ns, dev string, in bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		route := run(t, ns, "ip", "-4", "route", "show", "table", "100", "default")
		if strings.Contains(strings.Join(strings.Fields(route), " ")+" ", " dev "+dev+" ") == in {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("balance route still %q 5 s on, want %s in it: %v", route, dev, in)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
