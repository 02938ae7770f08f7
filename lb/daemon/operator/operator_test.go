package operator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "op.json")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 10, 32, 5, 0, time.UTC)
	if e, _ := s.Set("isp1", Drain, t0); e.Describe() != "drained by operator since 10:32:05" {
		t.Errorf("Describe = %q", e.Describe())
	}
	// The same mode again keeps its time.
	if e, _ := s.Set("isp1", Drain, t0.Add(time.Hour)); !e.Since.Equal(t0) {
		t.Errorf("since %v", e.Since)
	}
	s.Set("isp2", Down, t0)
	s.Set("isp2", Auto, t0)

	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if e := s2.Get("isp1"); e.Mode != Drain || !e.Since.Equal(t0) {
		t.Errorf("isp1 after reopening: %+v", e)
	}
	if e := s2.Get("isp2"); e.Mode != Auto {
		t.Errorf("isp2 after reopening: %+v", e)
	}
	// A reload removed isp1.
	gone, err := s2.Keep([]string{"isp2"})
	if err != nil || len(gone) != 1 || gone[0] != "isp1" {
		t.Fatalf("Keep: %v %v", gone, err)
	}
	s3, _ := Open(path)
	if e := s3.Get("isp1"); e.Mode != Auto {
		t.Errorf("isp1 after it left the config: %+v", e)
	}
}

func TestOpenCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"truncated": `{"version":1,"links":{"isp1":{"mode":"dra`,
		"bad mode":  `{"version":1,"links":{"isp1":{"mode":"sideways"}}}`,
		"version":   `{"version":2}`,
	} {
		path := filepath.Join(t.TempDir(), "op.json")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err == nil || !strings.Contains(err.Error(), "every link in auto") {
			t.Errorf("%s: %v", name, err)
		}
		if e := s.Get("isp1"); e.Mode != Auto {
			t.Errorf("%s: %+v", name, e)
		}
		if _, err := s.Set("isp1", Down, time.Now()); err != nil {
			t.Errorf("%s: the store is not usable: %v", name, err)
		}
	}
}

// A directory that cannot be written: the mode is not set.
func TestSetFailsToSave(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "missing", "op.json"))
	if _, err := s.Set("isp1", Drain, time.Now()); err == nil {
		t.Fatal("Set saved into a missing directory")
	}
	if e := s.Get("isp1"); e.Mode != Auto {
		t.Errorf("mode set though not saved: %+v", e)
	}
}

// A state file others could have written (a --operator-state in a
// directory a local user can write) is not believed: a forged "down"
// would take a link out.
func TestOpenUntrusted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "op.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"links":{"isp1":{"mode":"down","since":"2026-01-01T00:00:00Z"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o646); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "others could have written it") || !strings.Contains(err.Error(), "every link in auto") {
		t.Errorf("Open: %v", err)
	}
	if e := s.Get("isp1"); e.Mode != Auto {
		t.Errorf("isp1 from a forged file: %+v", e)
	}
}

// A file refused for its mode is replaced by a saved one the next start
// reads: the mode is not handed on.
func TestSaveOverAnUntrustedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "op.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"links":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	s, _ := Open(path)
	if _, err := s.Set("isp1", Drain, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil || s2.Get("isp1").Mode != Drain {
		t.Errorf("after a restart: %+v, %v", s2.Get("isp1"), err)
	}
}
