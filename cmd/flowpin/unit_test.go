package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"flowpin/lb/ctl"
	"flowpin/lb/daemon/resolv"
)

// The unit the package installs lets the daemon write where it keeps
// state: with ProtectSystem=strict the whole file system is read-only
// but for the directories the unit names, and a quota count that cannot
// be saved starts from zero at every restart and reboot.
func TestUnitWritesItsState(t *testing.T) {
	f, err := os.Open("../../examples/flowpin.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		t.Fatal(err)
	}
	var writable []string
	strict := false
	for _, o := range opts {
		if o.Section != "Service" {
			continue
		}
		switch o.Name {
		case "ProtectSystem":
			strict = o.Value == "strict"
		case "ReadWritePaths":
			writable = append(writable, strings.Fields(o.Value)...)
		case "StateDirectory":
			for _, d := range strings.Fields(o.Value) {
				writable = append(writable, filepath.Join("/var/lib", d))
			}
		case "RuntimeDirectory":
			for _, d := range strings.Fields(o.Value) {
				writable = append(writable, filepath.Join("/run", d))
			}
		}
	}
	if !strict {
		t.Fatal("the unit no longer has ProtectSystem=strict: this test checks nothing")
	}
	for _, dir := range []string{filepath.Dir(defaultQuotaState), ctl.SocketDir, resolv.DefaultDir} {
		if !slices.Contains(writable, dir) {
			t.Errorf("%s is read-only under the unit (writable: %v)", dir, writable)
		}
	}
}
