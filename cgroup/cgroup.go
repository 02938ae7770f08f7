// Package cgroup makes throwaway cgroup v2 groups: a command started in
// one, and everything it starts, can be matched by nftables'
// `socket cgroupv2` and killed as a whole.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Group is one cgroup v2 directory.
type Group struct {
	// Dir is its directory; Rel its path under the hierarchy's root
	// ("flowpin/use-123") and Level the number of parts of Rel.
	Dir   string
	Rel   string
	Level uint32
	// ID is the directory's inode number: the kernel's cgroup id, which
	// `socket cgroupv2` compares.
	ID uint64

	// mounted: the hierarchy was not mounted here (ip netns exec gives a
	// fresh /sys without it), so Create mounted it and Remove unmounts it.
	mounted string
}

// MountPrefix names the mount points Create makes in its mount
// directory: cgroup2-PID, PID the process that mounted it.
const MountPrefix = "cgroup2-"

// Mount finds the cgroup v2 hierarchy in /proc/self/mountinfo: at
// /sys/fs/cgroup on a unified system, /sys/fs/cgroup/unified on a hybrid
// one. root is the mount's root within the hierarchy ("/" unless in a
// cgroup namespace). Mount points Create made in mountDir are passed
// over: each goes when its process ends.
func Mount(mountDir string) (dir, root string, err error) {
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
// mountDir/cgroup2-PID for the group's lifetime: mountDir is on a tmpfs
// emptied at boot (/run/flowpin), and SweepMounts removes what a process
// killed before Remove left there.
func Create(rel, mountDir string) (*Group, error) {
	mnt, root, err := Mount(mountDir)
	mounted := ""
	if err != nil {
		// One hierarchy per cgroup namespace: mounting it again shows
		// the same groups.
		mnt = filepath.Join(mountDir, MountPrefix+strconv.Itoa(os.Getpid()))
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
	g.mounted = mounted
	return g, nil
}

// SweepMounts removes the mount points Create made in mountDir for
// processes that alive says have ended: a process killed with SIGKILL
// cannot unmount its own. Under ip netns exec the mount itself went with
// the process's private mount namespace and only the directory is left;
// in this namespace it is unmounted first. A directory that is not empty
// is left alone. It returns the names it removed.
func SweepMounts(mountDir string, alive func(pid int) bool) []string {
	entries, err := os.ReadDir(mountDir)
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
		path := filepath.Join(mountDir, e.Name())
		// EINVAL: not a mount point in this namespace.
		_ = syscall.Unmount(path, syscall.MNT_DETACH)
		if syscall.Rmdir(path) == nil {
			out = append(out, e.Name())
		}
	}
	return out
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

// Open returns a descriptor of the group for clone3's CLONE_INTO_CGROUP
// (syscall.SysProcAttr.CgroupFD): the child starts inside the group, so
// not even its first socket is made outside it.
func (g *Group) Open() (*os.File, error) {
	return os.OpenFile(g.Dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// Remove kills whatever is still in the group (a daemon the command left
// behind would otherwise lose its routing silently) and deletes it.
func (g *Group) Remove() error {
	// cgroup.kill: since Linux 5.14.
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
	if g.mounted != "" {
		err = errors.Join(err, syscall.Unmount(g.mounted, syscall.MNT_DETACH), syscall.Rmdir(g.mounted))
	}
	return err
}

// SweepSiblings deletes the groups beside g (in the same parent) whose
// names start with prefix and that keep says need not be kept. A group
// that still has processes cannot be deleted (rmdir says EBUSY) and is
// left alone. It returns the names of the groups it deleted.
func (g *Group) SweepSiblings(prefix string, keep func(name string) bool) []string {
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
