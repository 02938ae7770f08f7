package use

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
	got := CgroupFS{MountDir: dir}.SweepMounts(alive)
	if want := []string{filepath.Join(dir, "cgroup2-100"), filepath.Join(dir, "cgroup2-500")}; !slices.Equal(got, want) {
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

// create makes the group's directory with its parents and reads its
// inode as the cgroup's id; the level counts from the hierarchy's root,
// which is not the mount's in a cgroup namespace.
func TestCreate(t *testing.T) {
	mnt := t.TempDir()
	g, err := create(mnt, "/", "flowpin/use-42")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(mnt, "flowpin/use-42"))
	if err != nil || !st.IsDir() {
		t.Fatalf("no group directory: %v", err)
	}
	if g.Dir != filepath.Join(mnt, "flowpin/use-42") || g.Rel != "/flowpin/use-42" || g.Level != 2 || g.ID == 0 || g.Mounted != "" {
		t.Errorf("group %+v", g)
	}
	if g, err := create(mnt, "/machine/ct1", "flowpin/use-43"); err != nil || g.Rel != "/machine/ct1/flowpin/use-43" || g.Level != 4 {
		t.Errorf("under a cgroup namespace's root: %+v, %v", g, err)
	}
	file := filepath.Join(mnt, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := create(file, "/", "flowpin/use-44"); err == nil || !strings.HasPrefix(err.Error(), "create cgroup: ") {
		t.Errorf("create under a file: %v", err)
	}
	// Create first makes its mount directory its own: nothing is made
	// when it cannot.
	if _, err := (CgroupFS{MountDir: file}).Create("flowpin/use-45"); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("Create with a file as mount directory: %v", err)
	}
}

// SweepSiblings deletes the empty groups beside its own that keep lets
// go, and no other directory.
func TestSweepSiblings(t *testing.T) {
	parent := t.TempDir()
	for _, name := range []string{"use-1", "use-2", "use-3", "use-9", "other-1"} {
		if err := os.Mkdir(filepath.Join(parent, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Busy: a group with processes cannot be deleted.
	if err := os.WriteFile(filepath.Join(parent, "use-3", "cgroup.procs"), []byte("77\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "use-5"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var h CgroupFS
	self := &Group{Dir: filepath.Join(parent, "use-9")}
	var asked []string
	got := h.SweepSiblings(self, "use-", func(name string) bool {
		asked = append(asked, name)
		return name == "use-2"
	})
	if want := []string{"use-1"}; !slices.Equal(got, want) {
		t.Errorf("swept %v, want %v", got, want)
	}
	if want := []string{"use-1", "use-2", "use-3"}; !slices.Equal(asked, want) {
		t.Errorf("keep asked about %v, want %v", asked, want)
	}
	for name, want := range map[string]bool{"use-1": false, "use-2": true, "use-3": true, "use-9": true, "other-1": true, "use-4": false} {
		if got := h.HasSibling(self, name); got != want {
			t.Errorf("HasSibling(%s) = %v, want %v", name, got, want)
		}
	}
	if got := h.SweepSiblings(&Group{Dir: filepath.Join(parent, "gone", "use-1")}, "use-", func(string) bool { return false }); got != nil {
		t.Errorf("without a parent: swept %v", got)
	}
}

// A started command's end is its exit status, or the signal that killed
// it; a signal reaches it.
func TestStartWait(t *testing.T) {
	sh, err := CgroupFS{}.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		script string
		signal syscall.Signal
		want   Exit
	}{
		{script: "exit 0"},
		{script: "exit 7", want: Exit{Code: 7}},
		{script: "kill -QUIT $$", want: Exit{Signal: syscall.SIGQUIT}},
		{script: "exec sleep 60", signal: syscall.SIGINT, want: Exit{Signal: syscall.SIGINT}},
		{script: "trap 'exit 9' TERM; while :; do sleep 0.01; done", signal: syscall.SIGTERM, want: Exit{Code: 9}},
	} {
		t.Run(tc.script, func(t *testing.T) {
			p, err := start(sh, []string{"sh", "-c", tc.script}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.signal != 0 {
				if strings.HasPrefix(tc.script, "trap") {
					waitCaught(t, p.cmd.Process.Pid, tc.signal)
				}
				if err := p.Signal(tc.signal); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := p.Wait(); err != nil || got != tc.want {
				t.Errorf("Wait = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := start("/nonexistent/x", []string{"x"}, nil); err == nil || !strings.HasPrefix(err.Error(), "start x: ") {
		t.Errorf("start of a missing file: %v", err)
	}
}

// waitCaught waits until process pid has a handler for sig (its trap
// is set).
func waitCaught(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	for range 500 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && m&(1<<(sig-1)) != 0 {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d set no handler for %v in 5 s", pid, sig)
}

// Alive tells a process that runs from one that has ended; Signals
// relays a signal to this process until stopped.
func TestAliveAndSignals(t *testing.T) {
	var h CgroupFS
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !h.Alive(os.Getpid()) || h.Alive(cmd.Process.Pid) {
		t.Errorf("Alive(self) = %v, Alive(an ended child) = %v", h.Alive(os.Getpid()), h.Alive(cmd.Process.Pid))
	}
	c, stop := h.Signals(syscall.SIGUSR1)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-c:
		if s != syscall.SIGUSR1 {
			t.Errorf("relayed %v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SIGUSR1 not relayed in 5 s")
	}
}

// A group already gone is no error to Remove; the mount point Create
// made for it goes with it.
func TestRemoveGone(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, MountPrefix+"1")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	err := CgroupFS{}.Remove(&Group{Dir: filepath.Join(mnt, "flowpin/use-1")})
	if err != nil {
		t.Errorf("Remove of a group gone: %v", err)
	}
	// Not a mount point here: unmounting it fails, and it is removed
	// all the same.
	err = CgroupFS{}.Remove(&Group{Dir: filepath.Join(mnt, "flowpin/use-1"), Mounted: mnt})
	if err == nil || strings.Contains(err.Error(), "remove cgroup") {
		t.Errorf("Remove with a mount point that is none: %v, want only the unmount's error", err)
	}
	if _, err := os.Stat(mnt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mount point is left: %v", err)
	}
}

// Start starts a command only inside its group: not when the group is
// gone, nor where the directory is not a cgroup.
func TestStartOnlyInTheGroup(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := (CgroupFS{}).Start(&Group{Dir: filepath.Join(dir, "gone")}, sh, []string{"sh", "-c", "exit 0"}); err == nil || !strings.HasPrefix(err.Error(), "open ") {
		t.Errorf("Start in a group gone: %v", err)
	}
	// clone3 refuses CLONE_INTO_CGROUP with a descriptor that is not a
	// cgroup's: nothing is forked.
	if _, err := (CgroupFS{}).Start(&Group{Dir: dir}, sh, []string{"sh", "-c", "exit 0"}); err == nil || !strings.HasPrefix(err.Error(), "start sh: ") {
		t.Errorf("Start in a directory that is not a cgroup: %v", err)
	}
}
