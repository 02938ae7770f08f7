package config

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadWithin loads cfg, failing the test if that takes more than a few
// seconds: a FIFO with no writer blocks open(2) for ever.
func loadWithin(t *testing.T, cfg string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Load(cfg)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("Load(%s) still runs after 5 s", cfg)
		return nil
	}
}

// A set file that is no regular file (a FIFO anyone who can write the
// directory may put there, a device, a directory) is refused at once,
// naming the file: Load neither blocks on it nor reads it without end.
func TestSetFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.txt")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.txt")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{fifo, sub, "/dev/zero", link} {
		cfg := filepath.Join(dir, "f.yaml")
		writeFile(t, cfg, setsLinks+"sets:\n  - name: office\n    files: ["+f+"]\n")
		err := loadWithin(t, cfg)
		if want := "sets[0].files[0]: set file " + f + " is not a regular file"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %s", f, err, want)
		}
	}
}

// endless is a file that never ends: comment lines for ever (a log
// written to the wrong path, a file still being appended to).
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '#'
		if i%100 == 99 {
			p[i] = '\n'
		}
	}
	return len(p), nil
}

// Reading stops at MaxSetFileBytes, whatever the lines hold: a file that
// grows for ever must not hold apply or the daemon's reload.
func TestParseSetFileEndless(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		_, err := ParseSetFile("grow.txt", io.Reader(endless{}), func(netip.Prefix) {}, MaxSetLines)
		done <- err
	}()
	select {
	case err := <-done:
		if want := "grow.txt:"; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("got %v, want an error naming grow.txt and its size", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ParseSetFile still reads after 20 s")
	}
}

// The daemon runs as root and its errors reach the log and whoever may
// reload it (group flowpin). A set file only some may read (a symlink to
// /etc/shadow where a list was expected) must not have its lines shown:
// the line is named, not its value.
func TestSetFilePrivateLinesNotShown(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "shadow")
	writeFile(t, secret, "root:$y$j9T$secrethash:19000:0:99999:7:::\n")
	if err := os.Chmod(secret, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "f.yaml")
	writeFile(t, cfg, setsLinks+"sets:\n  - name: office\n    files: [shadow]\n")
	err := loadWithin(t, cfg)
	if err == nil || strings.Contains(err.Error(), "secrethash") || !strings.Contains(err.Error(), secret+":1: sets[0].files[0]: ") {
		t.Errorf("got %v, want the file and line named, without the value", err)
	}
	// A list anyone may read gets its value quoted, as before.
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := loadWithin(t, cfg); err == nil || !strings.Contains(err.Error(), "secrethash") {
		t.Errorf("a world-readable file's bad line: %v", err)
	}
}

// MaxSetLines bounds the files of all sets together: a bound per set let
// MaxSets times it pass (at 2M a set, some 170 GiB to apply).
func TestSetFilesBoundTogether(t *testing.T) {
	dir := t.TempDir()
	half := strings.Repeat("10.0.0.1\n", MaxSetLines/2+1)
	writeFile(t, filepath.Join(dir, "a.txt"), half)
	writeFile(t, filepath.Join(dir, "b.txt"), half)
	cfg := filepath.Join(dir, "f.yaml")
	writeFile(t, cfg, setsLinks+"sets:\n  - {name: a, files: [a.txt]}\n  - {name: b, files: [b.txt]}\n")
	err := loadWithin(t, cfg)
	if want := fmt.Sprintf("b.txt:%d: sets[1].files[0]: more than %d addresses in the sets' files", MaxSetLines/2, MaxSetLines); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %s", err, want)
	}
}
