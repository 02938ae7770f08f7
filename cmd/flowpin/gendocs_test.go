package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenDocs: gen-docs writes a man page for flowpin and for every
// command a user can run (hidden ones excepted), each naming itself in
// NAME, and completion scripts for bash, zsh and fish.
func TestGenDocs(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
	root.SetArgs([]string{"gen-docs", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"flowpin.8": "flowpin"}
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() {
			want["flowpin-"+c.Name()+".8"] = "flowpin-" + c.Name()
		}
	}
	for _, sub := range []string{"apply", "plan", "down", "run", "status", "verify", "explain", "version"} {
		if _, ok := want["flowpin-"+sub+".8"]; !ok {
			t.Errorf("no man page planned for %s", sub)
		}
	}
	for f, name := range want {
		b, err := os.ReadFile(filepath.Join(dir, "man8", f))
		if err != nil {
			t.Error(err)
			continue
		}
		s := string(b)
		if !strings.Contains(s, `.TH "FLOWPIN" "8" "Nov 2023"`) || !strings.Contains(s, ".SH NAME\n"+name+" - ") {
			t.Errorf("%s: bad header or NAME:\n%.300s", f, s)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "man8", "flowpin-gen-docs.8")); err == nil {
		t.Errorf("hidden gen-docs got a man page:\n%.200s", b)
	}
	for _, f := range []string{"flowpin.bash", "_flowpin", "flowpin.fish"} {
		b, err := os.ReadFile(filepath.Join(dir, "completions", f))
		if err != nil || !bytes.Contains(b, []byte("flowpin")) {
			t.Errorf("completion %s: %v, %d bytes", f, err, len(b))
		}
	}
	if _, err := exec.LookPath("bash"); err == nil {
		if out, err := exec.Command("bash", "-n", filepath.Join(dir, "completions", "flowpin.bash")).CombinedOutput(); err != nil {
			t.Errorf("bash -n flowpin.bash: %v\n%s", err, out)
		}
	}
}
