package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"flowpin/lb/version"
)

// These tests build the real binary the two ways people do and check that
// it knows which commit it was built from. They compile, so they are not
// run under -short.

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func versionJSON(t *testing.T, bin string) version.Info {
	t.Helper()
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("%s version --json: %v", bin, err)
	}
	var in version.Info
	if err := json.Unmarshal(out, &in); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	return in
}

// TestMakeBuildStamps: `make build` stamps git describe and the commit.
func TestMakeBuildStamps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err != nil {
		t.Skip("not a git checkout")
	}
	bin := filepath.Join(t.TempDir(), "flowpin")
	if out, err := exec.Command("make", "-C", root, "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	describe := gitOut(t, root, "describe", "--tags", "--always", "--dirty")
	head := gitOut(t, root, "rev-parse", "HEAD")
	in := versionJSON(t, bin)
	if in.Version != describe || in.Commit != head || in.Modified != strings.HasSuffix(describe, "-dirty") {
		t.Errorf("make build: version --json = %+v, want version %q commit %q", in, describe, head)
	}
	line, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "flowpin " + describe + " (commit " + head[:12]; !strings.HasPrefix(string(line), want) {
		t.Errorf("--version = %q, want it to start with %q", line, want)
	}
	if !strings.Contains(string(line), in.GoVersion) || !strings.HasPrefix(in.GoVersion, "go1.") {
		t.Errorf("--version = %q lacks the Go version %q", line, in.GoVersion)
	}
}

// TestGoBuildReadsVCS: a plain `go build` in a git checkout, with no
// -ldflags, reports the checkout's commit and whether it was modified,
// from the build information the Go toolchain records.
func TestGoBuildReadsVCS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// A fresh repository holding this tree: the Go toolchain records no
	// VCS information in a git worktree (its .git is a file), and the test
	// must not depend on how the source was checked out.
	src := t.TempDir()
	files := gitOut(t, root, "ls-files", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(files, "\n") {
		if f == "" || !(strings.HasSuffix(f, ".go") || f == "go.mod" || f == "go.sum" || strings.Contains(f, "/web/")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		} else if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitOut(t, src, "init", "-q")
	gitOut(t, src, "add", "-A")
	gitOut(t, src, "commit", "-q", "-m", "snapshot")
	head := gitOut(t, src, "rev-parse", "HEAD")
	bin := filepath.Join(t.TempDir(), "flowpin")
	build := func() {
		t.Helper()
		// -buildvcs=true: GOFLAGS may turn it off; the default (auto) is
		// what a person's go build gets.
		cmd := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/flowpin")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	build()
	if in := versionJSON(t, bin); in.Commit != head || in.Modified || !strings.HasSuffix(in.Version, head[:12]) {
		t.Errorf("clean go build: version --json = %+v, want commit %s, not modified", in, head)
	}
	if err := os.WriteFile(filepath.Join(src, "cmd/flowpin/zz_local.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build()
	if in := versionJSON(t, bin); in.Commit != head || !in.Modified {
		t.Errorf("go build of a modified tree: version --json = %+v, want commit %s, modified", in, head)
	}
}
