// Package nslock serializes the processes that write flowpin's state into
// one network namespace: apply, down and the daemon. Each read-diff-write
// must see the kernel as the previous writer left it, or two simultaneous
// applies record each other's sysctl values as the originals and leave a
// mix of both configs.
//
// The locks are flock(2) locks on files named after the namespace, in a
// directory only root can write. The kernel drops a flock when its holder
// exits, SIGKILL included, so a crash never leaves a namespace locked.
//
//   - <ns>.lock: the writer lock. apply and down hold it while they read and
//     write; the daemon holds it for its whole life.
//   - <ns>.daemon: held by a running daemon for its whole life. apply and
//     down refuse beside it: the daemon would undo what they write.
package nslock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir holds the lock files: /run is a root-owned tmpfs, emptied at
// boot.
const DefaultDir = "/run/flowpin"

// DefaultWait bounds how long apply, down and a starting daemon wait for
// another writer of the namespace.
const DefaultWait = 30 * time.Second

// Namespace is the locks of one network namespace.
type Namespace struct {
	Dir  string        // lock directory (DefaultDir; a temp dir in tests)
	ID   string        // the namespace's identity, from Name
	Wait time.Duration // how long Writer and Daemon wait for the writer lock
}

// Here returns the locks of the network namespace this process runs in.
func Here() (*Namespace, error) {
	id, err := ID()
	if err != nil {
		return nil, err
	}
	return &Namespace{Dir: DefaultDir, ID: id, Wait: DefaultWait}, nil
}

// ID names the network namespace this process runs in, for the files
// flowpin keeps per namespace in DefaultDir (locks, the daemon's socket).
// nsfs gives every network namespace its own inode, and every process in
// a namespace (ip netns exec included) sees the same one: see
// namespaces(7), "The /proc/[pid]/ns/ directory".
func ID() (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return "", fmt.Errorf("identify network namespace: stat /proc/self/ns/net: %w", err)
	}
	return Name(st.Dev, st.Ino), nil
}

// Name is the file name stem for the namespace whose /proc/*/ns/net has
// device dev and inode ino.
func Name(dev, ino uint64) string {
	return fmt.Sprintf("net-%x-%d", dev, ino)
}

// Held is a set of held locks; Release lets them go.
type Held struct {
	locks []*lockFile
}

// Release removes and unlocks the files, newest first. Safe to call on nil.
func (h *Held) Release() {
	if h == nil {
		return
	}
	for i := len(h.locks) - 1; i >= 0; i-- {
		h.locks[i].release()
	}
	h.locks = nil
}

// DaemonError: apply or down found a daemon managing the namespace.
type DaemonError struct{ PID int }

func (e *DaemonError) Error() string {
	who := "a flowpin daemon"
	if e.PID > 0 {
		who += " (pid " + strconv.Itoa(e.PID) + ")"
	}
	return who + " manages this network namespace: change its config and restart it, or stop it first"
}

// Writer takes the writer lock for apply or down (role names the command
// in messages to whoever waits). It refuses at once with a *DaemonError
// beside a running daemon, and waits up to n.Wait for another writer.
func (n *Namespace) Writer(role string) (*Held, error) {
	if err := n.checkDir(); err != nil {
		return nil, err
	}
	if err := n.daemonAbsent(); err != nil {
		return nil, err
	}
	w, err := acquire(n.path("lock"), role, n.Wait)
	if err != nil {
		return nil, err
	}
	// A daemon that started while we waited holds its lock and waits for
	// this one: leave the namespace to it.
	if err := n.daemonAbsent(); err != nil {
		w.release()
		return nil, err
	}
	return &Held{locks: []*lockFile{w}}, nil
}

// Daemon takes the daemon lock, refusing if another daemon holds it, then
// the writer lock, waiting up to n.Wait for an apply or down to finish.
// The daemon keeps both until it exits.
func (n *Namespace) Daemon() (*Held, error) {
	if err := n.checkDir(); err != nil {
		return nil, err
	}
	// A short wait: apply and down probe this lock for a moment (a shared
	// lock), which must not pass for a second daemon.
	d, err := acquire(n.path("daemon"), "run", 500*time.Millisecond)
	var busy *busyError
	if errors.As(err, &busy) {
		who := "another flowpin daemon"
		if busy.pid > 0 {
			who += " (pid " + strconv.Itoa(busy.pid) + ")"
		}
		return nil, errors.New(who + " already runs in this network namespace")
	}
	if err != nil {
		return nil, err
	}
	w, err := acquire(n.path("lock"), "run", n.Wait)
	if err != nil {
		d.release()
		return nil, err
	}
	return &Held{locks: []*lockFile{d, w}}, nil
}

func (n *Namespace) path(kind string) string {
	return filepath.Join(n.Dir, n.ID+"."+kind)
}

func (n *Namespace) checkDir() error { return OwnDir(n.Dir) }

// OwnDir makes dir if needed and checks that nobody but this user (root)
// can create, rename or delete entries in it: whoever could would replace
// a lock file (and make a writer believe it holds the lock) or the
// daemon's socket (and answer in its place). A directory of ours that
// others could write is tightened to 0755; files planted in it meanwhile
// are not trusted (see acquire and daemonAbsent).
func OwnDir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to uid %d: another user could replace flowpin's locks and socket there; remove it", dir, st.Uid, os.Geteuid())
	}
	if st.Mode&0o022 != 0 {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// daemonAbsent returns a *DaemonError when a daemon holds the daemon lock.
func (n *Namespace) daemonAbsent() error {
	fd, err := unix.Open(n.path("daemon"), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check for a daemon: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil && int(st.Uid) != os.Geteuid() {
		return nil // planted by another user: no daemon of ours
	}
	// A shared lock conflicts only with the daemon's exclusive one; it is
	// dropped when fd is closed.
	err = unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return &DaemonError{PID: holderPID(fd)}
	}
	if err != nil {
		return fmt.Errorf("check for a daemon: flock %s: %w", n.path("daemon"), err)
	}
	return nil
}

// busyError: the lock was still held when the wait ended.
type busyError struct {
	path, role string
	pid        int
	waited     time.Duration
}

func (e *busyError) Error() string {
	who := "another flowpin"
	if e.role != "" {
		who = "flowpin " + e.role
	}
	if e.pid > 0 {
		who += " (pid " + strconv.Itoa(e.pid) + ")"
	}
	return fmt.Sprintf("%s still holds %s after %v: it is changing this network namespace; try again when it is done", who, e.path, e.waited)
}

type lockFile struct {
	fd   int
	path string
}

// acquire takes an exclusive flock on path, polling until wait has passed.
// The holder writes "PID ROLE" into the file for whoever waits, and
// removes the file when it releases it, so no file outlives its namespace;
// a waiter that then gets the lock on the removed file sees that the path
// no longer names it and starts again.
func acquire(path, role string, wait time.Duration) (*lockFile, error) {
	deadline := time.Now().Add(wait)
	pause := 5 * time.Millisecond
	for {
		// 0600: a user who could open the file could flock it and stall
		// or fake a writer.
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		for {
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
				break
			}
			time.Sleep(pause)
			pause = min(2*pause, 100*time.Millisecond)
		}
		if errors.Is(err, unix.EWOULDBLOCK) {
			b := &busyError{path: path, waited: wait}
			b.pid, b.role = holder(fd)
			unix.Close(fd)
			return nil, b
		}
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: flock: %w", path, err)
		}
		var held, named unix.Stat_t
		if err := unix.Fstat(fd, &held); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if int(held.Uid) != os.Geteuid() {
			// Planted while the directory was open to others: not a lock
			// of ours. Remove it and take a fresh one.
			_ = unix.Unlink(path)
			unix.Close(fd)
			continue
		}
		if err := unix.Stat(path, &named); err != nil || named.Ino != held.Ino || named.Dev != held.Dev {
			unix.Close(fd) // released and removed by the previous holder
			continue
		}
		rec := []byte(strconv.Itoa(os.Getpid()) + " " + role + "\n")
		if err := unix.Ftruncate(fd, 0); err == nil {
			_, _ = unix.Pwrite(fd, rec, 0)
		}
		return &lockFile{fd: fd, path: path}, nil
	}
}

// release removes the file while still holding it, then unlocks it.
func (l *lockFile) release() {
	_ = unix.Unlink(l.path)
	_ = unix.Close(l.fd)
}

// holder reads "PID ROLE" from a lock file; zero values when unreadable.
func holder(fd int) (int, string) {
	b := make([]byte, 64)
	n, _ := unix.Pread(fd, b, 0)
	if n <= 0 {
		return 0, ""
	}
	pid, role, _ := strings.Cut(strings.TrimSpace(string(b[:n])), " ")
	p, err := strconv.Atoi(pid)
	if err != nil {
		return 0, ""
	}
	return p, role
}

func holderPID(fd int) int {
	p, _ := holder(fd)
	return p
}
