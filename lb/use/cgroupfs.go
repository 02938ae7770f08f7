package use

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"flowpin/lb/nslock"
)

// CgroupFS is the Host of a real system: throwaway cgroup v2 groups,
// whose sockets nftables' `socket cgroupv2` matches and which are killed
// as a whole, and commands started inside one by clone3.
type CgroupFS struct {
	// MountDir is where Create mounts the cgroup v2 hierarchy when none
	// is mounted: a directory on a tmpfs emptied at boot (/run/flowpin),
	// made first if missing.
	MountDir string
}

// MountPrefix names the mount points Create makes in MountDir:
// cgroup2-PID, PID the process that mounted it.
const MountPrefix = "cgroup2-"

// LookPath finds a command in $PATH.
func (CgroupFS) LookPath(name string) (string, error) { return exec.LookPath(name) }

// mount finds the cgroup v2 hierarchy in /proc/self/mountinfo: at
// /sys/fs/cgroup on a unified system, /sys/fs/cgroup/unified on a hybrid
// one. root is the mount's root within the hierarchy ("/" unless in a
// cgroup namespace). Mount points Create made in mountDir are passed
// over: each goes when its process ends.
func mount(mountDir string) (dir, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return findMount(f, mountDir)
}

func findMount(mountinfo io.Reader, mountDir string) (dir, root string, err error) {
	sc := bufio.NewScanner(mountinfo)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts... - fstype source superopts
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 && !isOurs(mountDir, fields[4]) {
				return fields[4], fields[3], nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	return "", "", errors.New("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
}

func isOurs(mountDir, path string) bool {
	return filepath.Dir(path) == filepath.Clean(mountDir) && strings.HasPrefix(filepath.Base(path), MountPrefix)
}

// Create makes the group rel (e.g. "flowpin/use-123") under the v2
// hierarchy, with its parents. Where the hierarchy is not mounted (ip
// netns exec gives a fresh /sys without it), it mounts it at
// MountDir/cgroup2-PID for the group's lifetime; SweepMounts removes
// what a process killed before Remove left there.
func (h CgroupFS) Create(rel string) (*Group, error) {
	if err := nslock.OwnDir(h.MountDir); err != nil {
		return nil, err
	}
	mnt, root, err := mount(h.MountDir)
	mounted := ""
	if err != nil {
		// One hierarchy per cgroup namespace: mounting it again shows
		// the same groups.
		mnt = filepath.Join(h.MountDir, MountPrefix+strconv.Itoa(os.Getpid()))
		if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		if err := syscall.Mount("none", mnt, "cgroup2", 0, ""); err != nil {
			_ = syscall.Rmdir(mnt)
			return nil, fmt.Errorf("create cgroup: no cgroup v2 hierarchy is mounted, and mounting one failed: %w", err)
		}
		mounted, root = mnt, "/"
	}
	g, err := create(mnt, root, rel)
	if err != nil {
		if mounted != "" {
			_ = syscall.Unmount(mounted, syscall.MNT_DETACH)
			_ = syscall.Rmdir(mounted)
		}
		return nil, err
	}
	g.Mounted = mounted
	return g, nil
}

func create(mnt, root, rel string) (*Group, error) {
	dir := filepath.Join(mnt, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	full := strings.Trim(filepath.Join(root, rel), "/")
	return &Group{Dir: dir, Rel: "/" + full, Level: uint32(strings.Count(full, "/") + 1), ID: st.Ino}, nil
}

// SweepMounts removes the mount points Create made in MountDir for
// processes that alive says have ended: a process killed with SIGKILL
// cannot unmount its own. Under ip netns exec the mount itself went with
// the process's private mount namespace and only the directory is left;
// in this namespace it is unmounted first. A directory that is not empty
// is left alone.
func (h CgroupFS) SweepMounts(alive func(pid int) bool) []string {
	entries, err := os.ReadDir(h.MountDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		num, ok := strings.CutPrefix(e.Name(), MountPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		if pid, err := strconv.Atoi(num); err != nil || pid <= 0 || alive(pid) {
			continue
		}
		path := filepath.Join(h.MountDir, e.Name())
		// EINVAL: not a mount point in this namespace.
		_ = syscall.Unmount(path, syscall.MNT_DETACH)
		if syscall.Rmdir(path) == nil {
			out = append(out, path)
		}
	}
	return out
}

// Remove writes cgroup.kill (since Linux 5.14) and deletes the group once
// its last process has gone, then the mount point Create made for it.
func (CgroupFS) Remove(g *Group) error {
	_ = os.WriteFile(filepath.Join(g.Dir, "cgroup.kill"), []byte("1"), 0)
	var err error
	for range 100 {
		// rmdir succeeds once the last process has gone; until then EBUSY.
		if err = syscall.Rmdir(g.Dir); err == nil || errors.Is(err, syscall.ENOENT) {
			err = nil
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		err = fmt.Errorf("remove cgroup %s: %w", g.Dir, err)
	}
	if g.Mounted != "" {
		err = errors.Join(err, syscall.Unmount(g.Mounted, syscall.MNT_DETACH), syscall.Rmdir(g.Mounted))
	}
	return err
}

// SweepSiblings: rmdir fails (EBUSY) on a group that still has
// processes.
func (CgroupFS) SweepSiblings(g *Group, prefix string, keep func(name string) bool) []string {
	parent, self := filepath.Dir(g.Dir), filepath.Base(g.Dir)
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || name == self || !strings.HasPrefix(name, prefix) || keep(name) {
			continue
		}
		if syscall.Rmdir(filepath.Join(parent, name)) == nil {
			out = append(out, name)
		}
	}
	return out
}

// HasSibling: a group it cannot tell about counts as there.
func (CgroupFS) HasSibling(g *Group, name string) bool {
	_, err := os.Stat(filepath.Join(filepath.Dir(g.Dir), name))
	return !errors.Is(err, os.ErrNotExist)
}

// Start opens g for clone3's CLONE_INTO_CGROUP (SysProcAttr.CgroupFD).
func (CgroupFS) Start(g *Group, path string, argv []string) (Process, error) {
	fd, err := os.OpenFile(g.Dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return start(path, argv, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())})
}

func start(path string, argv []string, attr *syscall.SysProcAttr) (*process, error) {
	child := exec.Command(path, argv[1:]...)
	child.Args[0] = argv[0]
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.SysProcAttr = attr
	if err := child.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return &process{child}, nil
}

type process struct{ cmd *exec.Cmd }

func (p *process) Signal(s os.Signal) error { return p.cmd.Process.Signal(s) }

func (p *process) Wait() (Exit, error) {
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return Exit{}, err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return Exit{Signal: ws.Signal()}, nil
	}
	return Exit{Code: ee.ExitCode()}, nil
}

// Signals uses signal.Notify; the channel holds a few, for signals that
// come before the command has started.
func (CgroupFS) Signals(sig ...os.Signal) (<-chan os.Signal, func()) {
	c := make(chan os.Signal, 4)
	signal.Notify(c, sig...)
	return c, func() { signal.Stop(c) }
}

// Alive: EPERM means the process exists but is another user's.
func (CgroupFS) Alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
