package setfiles

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"flowpin/lb/config"
)

// A file replaced by rename (as editors do) and a file written in place
// each give one reload; another file in the directory gives none.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "office.txt")
	if err := os.WriteFile(f, []byte("10.0.0.0/8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reloads := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, []string{f}, func() error { reloads <- struct{}{}; return nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	// The watch is up once it sees a change: rewrite the file until it
	// does (a fixed 100 ms sleep was too short on a loaded machine), then
	// let the rest of that burst settle.
	for up, deadline := false, time.Now().Add(10*time.Second); !up; {
		if time.Now().After(deadline) {
			t.Fatal("the watch saw no change of the file in 10 s")
		}
		if err := os.WriteFile(f, []byte("10.0.0.0/8\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reloads:
			up = true
		case <-time.After(3 * Settle):
		}
	}
	for quiet := false; !quiet; {
		select {
		case <-reloads:
		case <-time.After(3 * Settle):
			quiet = true
		}
	}
	expect := func(step string, n int) {
		t.Helper()
		got := 0
		deadline := time.After(3 * Settle)
		for {
			select {
			case <-reloads:
				got++
				continue
			case <-deadline:
			}
			break
		}
		if got != n {
			t.Errorf("%s: %d reloads, want %d", step, got, n)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "other.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("another file", 0)
	tmp := f + ".new"
	if err := os.WriteFile(tmp, []byte("10.1.0.0/16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	expect("rename over", 1)
	for i := range 5 {
		if err := os.WriteFile(f, []byte{byte('0' + i), '\n'}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	expect("five writes in a row", 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A set file that is a symlink (to a list an updater keeps elsewhere) is
// followed: a change of the file it points to gives a reload.
func TestWatchSymlink(t *testing.T) {
	etc, lists := t.TempDir(), t.TempDir()
	real := filepath.Join(lists, "country.txt")
	if err := os.WriteFile(real, []byte("10.0.0.0/8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(etc, "office.txt")
	if err := os.Symlink(real, f); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// With the file's stamp as read: a change before the watch is set
	// up (a slow machine) gives its reload too, as after.
	go func() {
		_ = WatchSince(ctx, []string{f}, map[string]string{f: config.FileStamp(fi)}, func() error { reloads <- struct{}{}; return nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	time.Sleep(100 * time.Millisecond) // the watch is set up, mostly: its events are what is tested
	tmp := real + ".new"
	if err := os.WriteFile(tmp, []byte("10.1.0.0/16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, real); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reloads:
	case <-time.After(3 * Settle):
		t.Errorf("the file the symlink points to changed: no reload")
	}
}

// A file that changed after the config read it, but before this watch
// began (during the reload that read it, which starts a new watcher and
// stops the one that saw the first change), gives a reload; an unchanged
// one does not.
func TestWatchChangedBeforeWatch(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "office.txt")
	if err := os.WriteFile(f, []byte("10.0.0.0/8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &config.Config{Sets: []config.Set{{Name: "office", Files: []string{f}}}}
	if err := c.ReadSetFiles(); err != nil {
		t.Fatal(err)
	}
	run := func() int {
		reloads := make(chan struct{}, 10)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			_ = WatchSince(ctx, FilesOf(c), Stamps(c), func() error { reloads <- struct{}{}; return nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
		got := 0
		deadline := time.After(3 * Settle)
		for {
			select {
			case <-reloads:
				got++
				continue
			case <-deadline:
			}
			return got
		}
	}
	if n := run(); n != 0 {
		t.Errorf("unchanged since read: %d reloads", n)
	}
	tmp := f + ".new"
	if err := os.WriteFile(tmp, []byte("10.1.0.0/16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	if n := run(); n != 1 {
		t.Errorf("replaced since read: %d reloads, want 1", n)
	}
}
