package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"flowpin/lb/ctl"
	"flowpin/lb/daemon/resolv"
)

// The shipped unit mounts the file system read-only (ProtectSystem=strict)
// but for what it names: every file `flowpin run` writes by default must
// lie in one of those, or the daemon loses it (the quota counts would be
// lost on every restart).
func TestUnitLetsTheDaemonWriteItsFiles(t *testing.T) {
	b, err := os.ReadFile("../../examples/flowpin.service")
	if err != nil {
		t.Fatal(err)
	}
	var writable []string
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "ProtectSystem":
			if v != "strict" {
				t.Fatalf("ProtectSystem=%s: this test assumes strict", v)
			}
		case "RuntimeDirectory":
			for _, d := range strings.Fields(v) {
				writable = append(writable, "/run/"+d)
			}
		case "StateDirectory":
			for _, d := range strings.Fields(v) {
				writable = append(writable, "/var/lib/"+d)
			}
		case "ReadWritePaths":
			writable = append(writable, strings.Fields(v)...)
		}
	}
	for what, path := range map[string]string{
		"the quota counts (--quota-state)":     defaultQuotaState,
		"the resolv file (--resolv-dir)":       filepath.Join(resolv.DefaultDir, resolv.FileName),
		"the status socket and operator modes": filepath.Join(ctl.SocketDir, "x.sock"),
	} {
		ok := false
		for _, w := range writable {
			if strings.HasPrefix(path, strings.TrimSuffix(w, "/")+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s, %s, is in none of the unit's writable paths %v", what, path, writable)
		}
	}
}
