// Package operator keeps what an operator said of each link with
// `flowpin link NAME drain|down|up|auto`: the daemon's part that owns the
// modes, shared by the daemons of every reload. It writes them to a state
// file (by default /run/flowpin/<network namespace>.operator.json), so
// they survive a reload and a daemon restart but not a reboot: /run is a
// tmpfs, and after a reboot every link is back to its health checks.
package operator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"flowpin/lb/daemon/statefile"
)

// Mode is what the operator said of a link.
type Mode string

// Modes.
const (
	// Auto: the health checks decide (the default; never stored).
	Auto Mode = "auto"
	// Drain: no new flows; established ones stay.
	Drain Mode = "drain"
	// Down: out as if it failed.
	Down Mode = "down"
	// Up: in, whatever the probes say.
	Up Mode = "up"
)

// ParseMode reads a mode as the command line gives it.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Auto, Drain, Down, Up:
		return m, nil
	}
	return "", fmt.Errorf("%q: want drain, down, up or auto", s)
}

// Entry is a link's mode and since when.
type Entry struct {
	Mode  Mode      `json:"mode"`
	Since time.Time `json:"since"`
}

// Describe is the entry as status says it: "drained by operator since
// 10:32:05".
func (e Entry) Describe() string {
	var what string
	switch e.Mode {
	case Drain:
		what = "drained"
	case Down:
		what = "down"
	case Up:
		what = "up"
	default:
		return ""
	}
	return what + " by operator since " + e.Since.Format("15:04:05")
}

type file struct {
	Version int `json:"version"`
	// Netns is the cookie of the network namespace whose modes these are
	// (0: not known). The file's default name is the namespace's nsfs
	// inode, which a namespace created after it is gone may get again.
	Netns uint64           `json:"netns_cookie,omitempty"`
	Links map[string]Entry `json:"links"`
}

// Store holds the links' modes; safe from any goroutine.
type Store struct {
	path  string // "": in memory only
	netns uint64 // the namespace's cookie, written with the modes

	mu    sync.Mutex
	links map[string]Entry
}

// Open reads the state file at path ("": none). A missing file is no
// mode set. One that does not parse is set aside as path + ".corrupt",
// every link is in auto, and the error says so (for the log); the store
// is usable.
func Open(path string) (*Store, error) { return OpenIn(path, 0) }

// OpenIn is Open for the network namespace of cookie netns (0: not
// known): a file of another namespace's (a namespace gone since, whose
// inode this one got) is not this one's; every link is in auto, and the
// error says so. A file that names no namespace is read.
func OpenIn(path string, netns uint64) (*Store, error) {
	s := &Store{path: path, netns: netns, links: map[string]Entry{}}
	if path == "" {
		return s, nil
	}
	data, err := statefile.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("operator state %s: %w (every link in auto)", path, err)
	}
	var f file
	err = json.Unmarshal(data, &f)
	if err == nil && f.Version != 1 {
		err = fmt.Errorf("version %d, want 1", f.Version)
	}
	for name, e := range f.Links {
		if _, perr := ParseMode(string(e.Mode)); perr != nil && err == nil {
			err = fmt.Errorf("link %q: mode %w", name, perr)
		}
	}
	if err != nil {
		aside := path + ".corrupt"
		_ = os.Rename(path, aside)
		return s, fmt.Errorf("operator state %s does not parse (%v): set aside as %s, every link in auto", path, err, aside)
	}
	if netns != 0 && f.Netns != 0 && f.Netns != netns {
		return s, fmt.Errorf("operator state %s is another network namespace's (cookie %d, this one's %d: one gone since, with this one's inode): every link in auto", path, f.Netns, netns)
	}
	for name, e := range f.Links {
		if e.Mode != Auto {
			s.links[name] = e
		}
	}
	return s, nil
}

// Get is link name's mode (Auto when none was set).
func (s *Store) Get(name string) Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.links[name]; ok {
		return e
	}
	return Entry{Mode: Auto}
}

// Set sets link name's mode at now and saves the file; a mode the link
// already has keeps its time. On a failed save the mode is not set.
func (s *Store) Set(name string, m Mode, now time.Time) (Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.links[name]
	if had && old.Mode == m {
		return old, nil
	}
	if !had && m == Auto {
		return Entry{Mode: Auto}, nil
	}
	next := make(map[string]Entry, len(s.links)+1)
	for k, v := range s.links {
		next[k] = v
	}
	e := Entry{Mode: m, Since: now}
	if m == Auto {
		delete(next, name)
	} else {
		next[name] = e
	}
	if err := s.save(next); err != nil {
		return old, err
	}
	s.links = next
	return e, nil
}

// Keep forgets the modes of links not in names (a reload removed them),
// and says which it forgot.
func (s *Store) Keep(names []string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := map[string]bool{}
	for _, n := range names {
		in[n] = true
	}
	next := map[string]Entry{}
	var gone []string
	for k, v := range s.links {
		if in[k] {
			next[k] = v
		} else {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	s.links = next
	return gone, s.save(next)
}

// save writes the file atomically: a temporary file in its directory,
// then renamed over it (renameio), so a crash leaves the old modes or the
// new ones.
func (s *Store) save(links map[string]Entry) error {
	if s.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(file{Version: 1, Netns: s.netns, Links: links}, "", "  ")
	if err != nil {
		return err
	}
	if err := statefile.Write(s.path, append(data, '\n')); err != nil {
		return fmt.Errorf("save operator state: %w", err)
	}
	return nil
}
