// Package quota counts the traffic of the links that have a data cap
// (links[i].quota) and says when one is exhausted and when a new period
// brings it back. It is the daemon's part that owns the counts: the loop
// feeds it the links' byte counters (nft, both directions, carried over
// the table's rewrites: lb/daemon/carry) and carries out what it returns.
//
// The counts live in a state file (by default /var/lib/flowpin/quota.json)
// that survives daemon restarts and reboots. The kernel's counters do not
// (a reboot, flowpin down or apply start them at zero), so the file holds
// what each link used in its period, and the counters are only read as
// deltas: a counter lower than the last reading was reset, and all it
// shows is new.
package quota

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/daemon/statefile"
)

// PeriodOf is the period of q that holds now: [start, end), in now's
// location (the daemon passes the router's local time, time.Local: TZ or
// /etc/localtime). Periods begin at local midnight: a monthly one on
// StartDay (the month's last day when it is shorter: start_day 31 begins
// on 28 or 29 February), a daily one every day, a fixed one every Days
// calendar days from Start. Calendar days, not 24 hours: a period over a
// DST change is an hour longer or shorter.
func PeriodOf(q *config.Quota, now time.Time) (start, end time.Time) {
	loc := now.Location()
	y, m, d := now.Date()
	switch q.Period {
	case config.Daily:
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		return start, time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case config.FixedDays:
		sy, sm, sd := q.Start.Date()
		// Whole calendar days from Start to now, counted on UTC dates so
		// that no DST change makes a day 23 or 25 hours, and in Unix
		// seconds: a time.Duration ends at 292 years, and a start further
		// away would pin every period to one in the past.
		days := int((time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() - time.Date(sy, sm, sd, 0, 0, 0, 0, time.UTC).Unix()) / 86400)
		k := days / q.Days
		if days < 0 && days%q.Days != 0 {
			k-- // floor: a date before Start is in an earlier period
		}
		start = time.Date(sy, sm, sd+k*q.Days, 0, 0, 0, 0, loc)
		return start, time.Date(sy, sm, sd+(k+1)*q.Days, 0, 0, 0, 0, loc)
	}
	start = monthStart(y, m, q.StartDay, loc)
	if now.Before(start) {
		start = monthStart(y, m-1, q.StartDay, loc)
	}
	sy, sm, _ := start.Date()
	return start, monthStart(sy, sm+1, q.StartDay, loc)
}

// monthStart is day (or the month's last day, if it has fewer) of month
// m of year y; m may be out of 1..12, as time.Date normalises it.
func monthStart(y int, m time.Month, day int, loc *time.Location) time.Time {
	first := time.Date(y, m, 1, 0, 0, 0, 0, loc)
	last := first.AddDate(0, 1, -1).Day()
	return time.Date(first.Year(), first.Month(), min(day, last), 0, 0, 0, 0, loc)
}

// Entry is one link's count in the state file.
type Entry struct {
	// Used: bytes in both directions since PeriodStart.
	Used        uint64    `json:"used"`
	PeriodStart time.Time `json:"period_start"`
	// Kernel is the kernel's counter last read (out+in), and Boot the boot
	// it was read in: after a daemon restart in the same boot, the counter
	// goes on from there.
	Kernel uint64 `json:"kernel"`
	Boot   string `json:"boot"`
}

type file struct {
	Version int               `json:"version"`
	Links   map[string]*Entry `json:"links"`
}

// Usage is a link's quota as status shows it.
type Usage struct {
	Bytes, Used, Left uint64
	PeriodStart       time.Time
	PeriodEnd         time.Time
	Exhausted         bool
}

// Change is a link whose quota was exhausted, or renewed by a new period.
type Change struct {
	Link      string
	Exhausted bool
	Usage     Usage
}

// Book is the links' counts. Its methods are safe from any goroutine:
// the loop feeds it, status reads it.
type Book struct {
	path string // "": counts kept in memory only
	boot string

	mu    sync.Mutex
	links map[string]*Entry
	// last is each counter as last read by this process (carried).
	last map[string]uint64
	// quotas are the links' quotas in the config as last set.
	quotas map[string]*config.Quota
	// exhausted as last said to the daemon.
	exhausted map[string]bool
	dirty     bool
}

// Open reads the state file at path ("": none, counts in memory). A
// missing file is an empty book. A file that does not parse (truncated by
// a crash of an older writer, edited by hand) is set aside as path +
// ".corrupt" and the counts start again from zero: the error says so, for
// the log, and the book is usable.
func Open(path string) (*Book, error) {
	b := &Book{path: path, boot: bootID(), links: map[string]*Entry{}, last: map[string]uint64{}, quotas: map[string]*config.Quota{}, exhausted: map[string]bool{}}
	if path == "" {
		return b, nil
	}
	data, err := statefile.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return b, fmt.Errorf("quota state %s: %w (counting from zero)", path, err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil || f.Version != 1 {
		if err == nil {
			err = fmt.Errorf("version %d, want 1", f.Version)
		}
		aside := path + ".corrupt"
		_ = os.Rename(path, aside)
		return b, fmt.Errorf("quota state %s does not parse (%v): set aside as %s, counting from zero", path, err, aside)
	}
	for name, e := range f.Links {
		if e != nil {
			b.links[name] = e
		}
	}
	return b, nil
}

// bootID names this boot (proc(5): /proc/sys/kernel/random/boot_id).
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// Configure sets the links' quotas (a config, at start or on a reload).
// Links without a quota are forgotten, so a quota added later starts
// from zero.
func (b *Book) Configure(links []config.Link) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.quotas = map[string]*config.Quota{}
	for _, l := range links {
		if l.Quota != nil {
			b.quotas[l.Name] = l.Quota
		}
	}
	for name := range b.links {
		if b.quotas[name] == nil {
			delete(b.links, name)
			delete(b.last, name)
			delete(b.exhausted, name)
			b.dirty = true
		}
	}
}

// Reading is a link's counter (bytes out+in): Carried over the table's
// rewrites in this process (lb/daemon/carry), which never falls, and Raw
// as the kernel has it, which the next process goes on from.
type Reading struct{ Carried, Raw uint64 }

// Count takes the links' counters (by link name) read at now, and says which links' quotas were exhausted or renewed since the
// last call. A link missing from totals (its counter could not be read)
// is judged on what it had.
func (b *Book) Count(now time.Time, totals map[string]Reading) []Change {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Change
	for name, q := range b.quotas {
		e := b.links[name]
		start, _ := PeriodOf(q, now)
		if e == nil {
			// A quota new to the book counts from now: the counter's past
			// is the baseline (the same on a reboot: Boot is this one's).
			e = &Entry{PeriodStart: start, Boot: b.boot}
			if r, ok := totals[name]; ok {
				e.Kernel, b.last[name] = r.Raw, r.Carried
			}
			b.links[name] = e
			b.dirty = true
		}
		if start.After(e.PeriodStart) {
			// A new period. A clock that went back to an earlier period
			// (a wrong time set, then corrected) does not renew the
			// quota: what it counts meanwhile goes to the period counted.
			e.Used, e.PeriodStart = 0, start
			b.dirty = true
		}
		if r, ok := totals[name]; ok {
			base, seen := b.last[name]
			if !seen {
				// The first reading of this process: the kernel's counter
				// goes on from the last one saved in the same boot;
				// after a reboot it began at zero.
				if base = 0; e.Boot == b.boot {
					base = e.Kernel
				}
			}
			if r.Carried >= base {
				e.Used = addSat(e.Used, r.Carried-base)
			} else {
				e.Used = addSat(e.Used, r.Carried) // reset since: all of it is new
			}
			if r.Carried != base || e.Kernel != r.Raw || e.Boot != b.boot {
				b.dirty = true
			}
			b.last[name] = r.Carried
			e.Kernel, e.Boot = r.Raw, b.boot
		}
		u := b.usage(name, q, e, now)
		if u.Exhausted != b.exhausted[name] {
			b.exhausted[name] = u.Exhausted
			out = append(out, Change{Link: name, Exhausted: u.Exhausted, Usage: u})
		}
	}
	return out
}

func addSat(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

func (b *Book) usage(name string, q *config.Quota, e *Entry, now time.Time) Usage {
	start, end := PeriodOf(q, now)
	u := Usage{Bytes: q.Bytes, PeriodStart: start, PeriodEnd: end}
	if e != nil && !e.PeriodStart.Before(start) {
		u.Used = e.Used
	}
	if u.Used < q.Bytes {
		u.Left = q.Bytes - u.Used
	}
	u.Exhausted = u.Left == 0
	return u
}

// Usage is link name's quota now (false: it has none).
func (b *Book) Usage(name string, now time.Time) (Usage, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.quotas[name]
	if q == nil {
		return Usage{}, false
	}
	return b.usage(name, q, b.links[name], now), true
}

// Exhausted says whether link name's quota was exhausted at the last Count.
func (b *Book) Exhausted(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.exhausted[name]
}

// Save writes the state file if anything changed since the last Save:
// to a temporary file in its directory, synced, then renamed over it, so
// a crash or a power cut leaves the old file or the new one, never half
// of one (renameio).
func (b *Book) Save() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.path == "" || !b.dirty {
		return nil
	}
	data, err := json.MarshalIndent(file{Version: 1, Links: b.links}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.path), 0o755); err != nil {
		return fmt.Errorf("save quota state: %w", err)
	}
	if err := statefile.Write(b.path, append(data, '\n')); err != nil {
		return fmt.Errorf("save quota state: %w", err)
	}
	b.dirty = false
	return nil
}
