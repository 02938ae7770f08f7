package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"flowpin/lb/daemon/operator"
	"flowpin/lb/nslock"
)

// The operator's modes are the network namespace's, and a namespace's
// nsfs inode (the default file's name) is reused by a namespace created
// after it is gone: a file left by another namespace, or by this one's
// predecessor of the same inode, is not this one's and takes no link
// out. A file without a cookie (an older daemon's) is still read.
func TestOpenStatesOfAnotherNamespace(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	own, err := nslock.Cookie()
	if err != nil || own == 0 {
		t.Fatalf("this namespace's cookie: %d, %v (SO_NETNS_COOKIE needs Linux 5.14)", own, err)
	}
	for name, c := range map[string]struct {
		file string
		want operator.Mode
	}{
		"another namespace": {`{"version":1,"netns_cookie":` + strconv.FormatUint(own+1, 10) + `,"links":{"isp1":{"mode":"down","since":"2026-01-01T00:00:00Z"}}}`, operator.Auto},
		"no cookie":         {`{"version":1,"links":{"isp1":{"mode":"down","since":"2026-01-01T00:00:00Z"}}}`, operator.Down},
	} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(c.file), 0o644); err != nil {
			t.Fatal(err)
		}
		ops, _, err := openStates(path, "", log)
		if err != nil {
			t.Fatal(err)
		}
		if e := ops.Get("isp1"); e.Mode != c.want {
			t.Errorf("%s: isp1 %+v, want %s", name, e, c.want)
		}
	}
	// This namespace's own file is read.
	path := filepath.Join(dir, "own.json")
	ops, _, err := openStates(path, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Set("isp1", operator.Drain, ops.Get("isp1").Since); err != nil {
		t.Fatal(err)
	}
	again, _, err := openStates(path, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if e := again.Get("isp1"); e.Mode != operator.Drain {
		t.Errorf("this namespace's own file: isp1 %+v, want drain", e)
	}
}
