package cgroup

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A mount point another flowpin process made in the mount directory is
// passed over: it is unmounted when that process ends.
func TestFindMountPassesOverOurs(t *testing.T) {
	const info = `30 1 0:26 / /run rw,nosuid - tmpfs tmpfs rw
88 30 0:38 / /run/flowpin/cgroup2-4242 rw,relatime - cgroup2 none rw
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	dir, root, err := findMount(strings.NewReader(info), "/run/flowpin")
	if err != nil || dir != "/sys/fs/cgroup/unified" || root != "/" {
		t.Errorf("findMount = %q, %q, %v; want /sys/fs/cgroup/unified, /", dir, root, err)
	}
	if _, _, err := findMount(strings.NewReader(info[:strings.Index(info, "41 ")]), "/run/flowpin"); err == nil {
		t.Error("only another process's mount point: found one, want none")
	}
	if dir, _, _ := findMount(strings.NewReader(info), "/elsewhere"); dir != "/run/flowpin/cgroup2-4242" {
		t.Errorf("with another mount directory: %q, want the first cgroup2 mount", dir)
	}
}

// SweepMounts deletes the empty mount points of processes that ended and
// nothing else.
func TestSweepMounts(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"cgroup2-100", "cgroup2-200", "cgroup2-300", "cgroup2-x", "cgroup2-0", "net-4-1.lock.d", "cgroup2-500"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Not empty: not a mount point of ours, or still mounted.
	if err := os.WriteFile(filepath.Join(dir, "cgroup2-300", "cgroup.procs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup2-400"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	alive := func(pid int) bool { return pid == 200 }
	got := SweepMounts(dir, alive)
	if want := []string{"cgroup2-100", "cgroup2-500"}; !slices.Equal(got, want) {
		t.Errorf("swept %v, want %v", got, want)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"cgroup2-0", "cgroup2-200", "cgroup2-300", "cgroup2-400", "cgroup2-x", "net-4-1.lock.d"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
