package quota

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
)

func day(loc *time.Location, y int, m time.Month, d, h int) time.Time {
	return time.Date(y, m, d, h, 0, 0, 0, loc)
}

func TestPeriodOf(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	utc := time.UTC
	monthly := func(d int) *config.Quota { return &config.Quota{Period: config.Monthly, StartDay: d} }
	days := func(n int, start time.Time) *config.Quota {
		return &config.Quota{Period: config.FixedDays, Days: n, Start: start}
	}
	for _, c := range []struct {
		name       string
		q          *config.Quota
		now        time.Time
		start, end time.Time
	}{
		{"monthly from the 1st", monthly(1), day(utc, 2026, 3, 15, 12), day(utc, 2026, 3, 1, 0), day(utc, 2026, 4, 1, 0)},
		{"monthly at its first instant", monthly(1), day(utc, 2026, 3, 1, 0), day(utc, 2026, 3, 1, 0), day(utc, 2026, 4, 1, 0)},
		{"start_day 31 in February", monthly(31), day(utc, 2026, 2, 20, 0), day(utc, 2026, 1, 31, 0), day(utc, 2026, 2, 28, 0)},
		{"start_day 31 from 28 February", monthly(31), day(utc, 2026, 3, 5, 0), day(utc, 2026, 2, 28, 0), day(utc, 2026, 3, 31, 0)},
		{"start_day 31 in a leap February", monthly(31), day(utc, 2028, 2, 29, 1), day(utc, 2028, 2, 29, 0), day(utc, 2028, 3, 31, 0)},
		{"start_day 30 in April", monthly(30), day(utc, 2026, 4, 30, 3), day(utc, 2026, 4, 30, 0), day(utc, 2026, 5, 30, 0)},
		{"start_day 15 over the new year", monthly(15), day(utc, 2027, 1, 3, 0), day(utc, 2026, 12, 15, 0), day(utc, 2027, 1, 15, 0)},
		{"daily", &config.Quota{Period: config.Daily}, day(utc, 2026, 5, 5, 23), day(utc, 2026, 5, 5, 0), day(utc, 2026, 5, 6, 0)},
		// Local midnight: 23 hours on the day clocks go forward.
		{"daily over DST", &config.Quota{Period: config.Daily}, day(berlin, 2026, 3, 29, 12), day(berlin, 2026, 3, 29, 0), day(berlin, 2026, 3, 30, 0)},
		{"30 days", days(30, day(utc, 2026, 1, 10, 0)), day(utc, 2026, 3, 12, 5), day(utc, 2026, 3, 11, 0), day(utc, 2026, 4, 10, 0)},
		{"30 days, first", days(30, day(utc, 2026, 1, 10, 0)), day(utc, 2026, 1, 10, 0), day(utc, 2026, 1, 10, 0), day(utc, 2026, 2, 9, 0)},
		{"30 days, before the start", days(30, day(utc, 2026, 1, 10, 0)), day(utc, 2026, 1, 9, 0), day(utc, 2025, 12, 11, 0), day(utc, 2026, 1, 10, 0)},
		{"7 days over DST", days(7, day(berlin, 2026, 3, 25, 0)), day(berlin, 2026, 3, 31, 23), day(berlin, 2026, 3, 25, 0), day(berlin, 2026, 4, 1, 0)},
		// Starts more than 292 years away, past what a time.Duration
		// holds: weeks from a Friday (1700-01-01) and from a Saturday
		// (2400-01-01, as 2000-01-01), days from year 1.
		{"7 days from 1700", days(7, day(utc, 1700, 1, 1, 0)), day(utc, 2026, 3, 12, 5), day(utc, 2026, 3, 6, 0), day(utc, 2026, 3, 13, 0)},
		{"7 days from 2400", days(7, day(utc, 2400, 1, 1, 0)), day(utc, 2026, 3, 12, 5), day(utc, 2026, 3, 7, 0), day(utc, 2026, 3, 14, 0)},
		{"1 day from year 1", days(1, day(utc, 1, 1, 1, 0)), day(utc, 2026, 3, 12, 5), day(utc, 2026, 3, 12, 0), day(utc, 2026, 3, 13, 0)},
	} {
		start, end := PeriodOf(c.q, c.now)
		if !start.Equal(c.start) || !end.Equal(c.end) {
			t.Errorf("%s: PeriodOf(%v) = [%v, %v), want [%v, %v)", c.name, c.now, start, end, c.start, c.end)
		}
	}
}

func quotaLinks(q *config.Quota) []config.Link {
	return []config.Link{{Name: "lte", Quota: q}, {Name: "cable"}}
}

// Deltas across counter resets, a restart in the same boot (the file's
// counter goes on), one after a reboot (the counter began at zero), and
// a clock that goes back.
func TestCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.json")
	q := &config.Quota{Bytes: 1000, Period: config.Monthly, StartDay: 1}
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b.Configure(quotaLinks(q))
	now := day(time.UTC, 2026, 1, 10, 0)
	used := func(b *Book) uint64 { u, _ := b.Usage("lte", now); return u.Used }

	// A new quota counts from now: what the counter had is the baseline.
	b.Count(now, map[string]Reading{"lte": {Carried: 5000, Raw: 5000}})
	if got := used(b); got != 0 {
		t.Fatalf("first reading: used %d, want 0", got)
	}
	b.Count(now, map[string]Reading{"lte": {Carried: 5300, Raw: 5300}})
	// The table rewritten: carried goes on, raw starts again.
	b.Count(now, map[string]Reading{"lte": {Carried: 5400, Raw: 100}})
	if got := used(b); got != 400 {
		t.Fatalf("used %d, want 400", got)
	}
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}

	// A restart in the same boot: the kernel's counter went on from 100.
	b2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b2.Configure(quotaLinks(q))
	b2.Count(now, map[string]Reading{"lte": {Carried: 250, Raw: 250}})
	if got := used(b2); got != 550 {
		t.Fatalf("after a restart: used %d, want 550", got)
	}
	// A counter that fell (flowpin down, apply): all it shows is new.
	ch := b2.Count(now, map[string]Reading{"lte": {Carried: 500, Raw: 500}})
	ch = append(ch, b2.Count(now, map[string]Reading{"lte": {Carried: 30, Raw: 30}})...)
	if got := used(b2); got != 830 || len(ch) != 0 {
		t.Fatalf("used %d, changes %+v; want 830", got, ch)
	}
	ch = b2.Count(now, map[string]Reading{"lte": {Carried: 300, Raw: 300}})
	if got := used(b2); got != 1100 || len(ch) != 1 || !ch[0].Exhausted || ch[0].Usage.Left != 0 {
		t.Fatalf("used %d, changes %+v; want 1100, exhausted", got, ch)
	}
	if err := b2.Save(); err != nil {
		t.Fatal(err)
	}

	// After a reboot the counter began at zero.
	b3, _ := Open(path)
	b3.boot = "another boot"
	b3.Configure(quotaLinks(q))
	if ch := b3.Count(now, map[string]Reading{"lte": {Carried: 20, Raw: 20}}); len(ch) != 1 || !ch[0].Exhausted {
		t.Errorf("a new process learns the quota is exhausted: %+v", ch)
	}
	if got := used(b3); got != 1120 {
		t.Fatalf("after a reboot: used %d, want 1120", got)
	}

	// The clock set back a month: no new period, the count goes on.
	back := day(time.UTC, 2025, 12, 20, 0)
	if ch := b3.Count(back, map[string]Reading{"lte": {Carried: 40, Raw: 40}}); len(ch) != 0 {
		t.Errorf("clock back: %+v", ch)
	}
	if u, _ := b3.Usage("lte", back); u.Used != 1140 || !u.Exhausted {
		t.Errorf("clock back: %+v", u)
	}
	// The next month: a new period, back.
	next := day(time.UTC, 2026, 2, 1, 0)
	ch = b3.Count(next, map[string]Reading{"lte": {Carried: 50, Raw: 50}})
	if u, _ := b3.Usage("lte", next); len(ch) != 1 || ch[0].Exhausted || u.Used != 10 || u.Left != 990 {
		t.Errorf("new period: %+v %+v", ch, u)
	}
	if _, ok := b3.Usage("cable", next); ok {
		t.Error("a link without a quota has a usage")
	}
}

// The largest quota a config can give does not overflow.
func TestCountSaturates(t *testing.T) {
	q := &config.Quota{Bytes: ^uint64(0), Period: config.Daily}
	b, _ := Open("")
	b.Configure(quotaLinks(q))
	now := day(time.UTC, 2026, 1, 1, 0)
	b.Count(now, map[string]Reading{"lte": {Carried: 0}})
	b.Count(now, map[string]Reading{"lte": {Carried: ^uint64(0) - 1}})
	b.Count(now, map[string]Reading{"lte": {Carried: 5}}) // a reset
	u, _ := b.Usage("lte", now)
	if u.Used != ^uint64(0) || !u.Exhausted || u.Left != 0 {
		t.Errorf("%+v", u)
	}
}

// A corrupt or truncated file is set aside and counting starts again.
func TestOpenCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"truncated": `{"version":1,"links":{"lte":{"used":12`,
		"garbage":   "\x00\x01not json",
		"version":   `{"version":7,"links":{}}`,
	} {
		path := filepath.Join(t.TempDir(), "q.json")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Open(path)
		if err == nil || !strings.Contains(err.Error(), "set aside as "+path+".corrupt") {
			t.Errorf("%s: %v", name, err)
		}
		if _, serr := os.Stat(path + ".corrupt"); serr != nil {
			t.Errorf("%s: not set aside: %v", name, serr)
		}
		b.Configure(quotaLinks(&config.Quota{Bytes: 10, Period: config.Daily}))
		now := day(time.UTC, 2026, 1, 1, 0)
		b.Count(now, map[string]Reading{"lte": {Carried: 3}})
		b.Count(now, map[string]Reading{"lte": {Carried: 8}})
		if u, _ := b.Usage("lte", now); u.Used != 5 {
			t.Errorf("%s: usable book counts %+v", name, u)
		}
		if err := b.Save(); err != nil {
			t.Errorf("%s: save: %v", name, err)
		}
	}
}

// A state file others could have written is not believed (a forged
// count would put a link on standby), and neither is a huge one.
func TestOpenUntrusted(t *testing.T) {
	forged := `{"version":1,"links":{"lte":{"used":1000000,"period_start":"2026-01-01T00:00:00Z"}}}`
	for name, c := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"world-writable": {[]byte(forged), 0o646},
		"huge":           {[]byte(forged + strings.Repeat(" ", 2<<20)), 0o644},
	} {
		path := filepath.Join(t.TempDir(), "q.json")
		if err := os.WriteFile(path, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		b, err := Open(path)
		if err == nil || !strings.Contains(err.Error(), "counting from zero") {
			t.Errorf("%s: Open: %v", name, err)
		}
		b.Configure(quotaLinks(&config.Quota{Bytes: 10, Period: config.Daily}))
		now := day(time.UTC, 2026, 1, 1, 5)
		b.Count(now, map[string]Reading{"lte": {Carried: 3}})
		if u, _ := b.Usage("lte", now); u.Used != 0 || u.Exhausted {
			t.Errorf("%s: counts from the file: %+v", name, u)
		}
	}
}

// A file refused for its mode is replaced by a saved one the next start
// reads: the mode is not handed on.
func TestSaveOverAnUntrustedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"links":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	b, _ := Open(path)
	b.Configure(quotaLinks(&config.Quota{Bytes: 10, Period: config.Daily}))
	now := day(time.UTC, 2026, 1, 1, 5)
	b.Count(now, map[string]Reading{"lte": {Carried: 3}})
	b.Count(now, map[string]Reading{"lte": {Carried: 7}})
	if err := b.Save(); err != nil {
		t.Fatal(err)
	}
	b2, err := Open(path)
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	b2.Configure(quotaLinks(&config.Quota{Bytes: 10, Period: config.Daily}))
	if u, _ := b2.Usage("lte", now); u.Used != 4 {
		t.Errorf("after a restart: %+v", u)
	}
}
