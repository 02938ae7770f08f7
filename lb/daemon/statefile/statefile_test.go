package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok", []byte("{}"), 0o644)
	if b, err := Read(ok); err != nil || string(b) != "{}" {
		t.Errorf("a file of ours: %q %v", b, err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(link); err != nil || string(b) != "{}" {
		t.Errorf("a symlink to a file of ours: %q %v", b, err)
	}
	if _, err := Read(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		path, want string
	}{
		"world-writable": {write("ww", []byte("{}"), 0o646), "others could have written it"},
		"group-writable": {write("gw", []byte("{}"), 0o664), "others could have written it"},
		"huge":           {write("huge", make([]byte, MaxSize+1), 0o644), "more than a state file's"},
		"fifo":           {fifo, "not a regular file"},
	} {
		if _, err := Read(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	// Another user's file, as the file of ours is to a daemon of another
	// uid.
	me := os.Geteuid()
	euid = func() int { return me + 1 }
	defer func() { euid = os.Geteuid }()
	if _, err := Read(ok); err == nil || !strings.Contains(err.Error(), "another user could have written it") {
		t.Errorf("another user's file: %v", err)
	}
}

// Write replaces the file with one of mode 0644, whatever the one it
// replaces had: a file others could write (planted, or left 0666) would
// otherwise hand its mode on, and Read would refuse every later version.
func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(path); err != nil || string(b) != `{"a":1}` {
		t.Errorf("read back: %q %v", b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}
