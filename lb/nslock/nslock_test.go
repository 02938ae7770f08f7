package nslock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func testNS(t *testing.T, dir, id string) *Namespace {
	t.Helper()
	return &Namespace{Dir: dir, ID: id, Wait: 5 * time.Second}
}

func TestName(t *testing.T) {
	a, b, c := Name(4, 4026531840), Name(4, 4026532999), Name(5, 4026531840)
	if a == b || a == c || b == c {
		t.Errorf("different namespaces share a name: %q %q %q", a, b, c)
	}
	if Name(4, 4026531840) != a {
		t.Error("the same namespace got two names")
	}
	if strings.ContainsAny(a, "/ ") {
		t.Errorf("%q is not a plain file name", a)
	}
}

// Here names the namespace /proc/self/ns/net points at; that link is the
// same for every thread of a process in one namespace.
func TestHere(t *testing.T) {
	n, err := Here()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	if n.ID != Name(st.Dev, st.Ino) || n.Dir != DefaultDir || n.Wait != DefaultWait {
		t.Errorf("Here() = %+v", n)
	}
}

// Writers of one namespace never overlap; writers of two namespaces do not
// wait for each other.
func TestWritersSerialize(t *testing.T) {
	dir := t.TempDir()
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := testNS(t, dir, "net-1-1")
			for range 20 {
				h, err := n.Writer(fmt.Sprint("g", g))
				if err != nil {
					t.Error(err)
					return
				}
				now := inside.Add(1)
				for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
				}
				time.Sleep(200 * time.Microsecond)
				inside.Add(-1)
				h.Release()
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Errorf("%d writers held the lock at once", m)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("lock files left after release: %v", ents)
	}
}

func TestNamespacesIndependent(t *testing.T) {
	dir := t.TempDir()
	a := testNS(t, dir, Name(4, 100))
	b := testNS(t, dir, Name(4, 101))
	a.Wait, b.Wait = 50*time.Millisecond, 0
	ha, err := a.Writer("apply")
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Release()
	hd, err := a.Daemon()
	if err == nil {
		t.Fatal("daemon took the writer lock an apply holds")
	}
	hd.Release()
	hb, err := b.Writer("apply")
	if err != nil {
		t.Fatalf("namespace b waited for namespace a: %v", err)
	}
	hb.Release()
	hbd, err := b.Daemon()
	if err != nil {
		t.Fatalf("daemon in b refused over a's writer: %v", err)
	}
	hbd.Release()
}

func TestWriterTimeout(t *testing.T) {
	dir := t.TempDir()
	n := testNS(t, dir, "net-1-1")
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	n2 := testNS(t, dir, "net-1-1")
	n2.Wait = 150 * time.Millisecond
	start := time.Now()
	_, err = n2.Writer("down")
	took := time.Since(start)
	want := fmt.Sprintf("flowpin apply (pid %d) still holds %s after 150ms", os.Getpid(), filepath.Join(dir, "net-1-1.lock"))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error saying %q", err, want)
	}
	if took < n2.Wait {
		t.Errorf("gave up after %v, before the %v wait", took, n2.Wait)
	}
	h.Release()
	if h2, err := n2.Writer("down"); err != nil {
		t.Errorf("after release: %v", err)
	} else {
		h2.Release()
	}
}

// A waiting writer gets the lock as soon as the holder lets go.
func TestWriterWaits(t *testing.T) {
	dir := t.TempDir()
	n := testNS(t, dir, "net-1-1")
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		released <- time.Now()
		h.Release()
	}()
	h2, err := n.Writer("apply")
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Release()
	if lag := time.Since(<-released); lag > time.Second {
		t.Errorf("took the lock %v after its release", lag)
	}
}

func TestCommandsRefusedBesideDaemon(t *testing.T) {
	dir := t.TempDir()
	n := testNS(t, dir, "net-1-1")
	hd, err := n.Daemon()
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"apply", "down"} {
		start := time.Now()
		_, err := n.Writer(role)
		var de *DaemonError
		if !errors.As(err, &de) || de.PID != os.Getpid() {
			t.Fatalf("%s beside a daemon: %v, want a DaemonError naming pid %d", role, err, os.Getpid())
		}
		want := fmt.Sprintf("a flowpin daemon (pid %d) manages this network namespace: change its config and restart it, or stop it first", os.Getpid())
		if err.Error() != want {
			t.Errorf("%s: %q, want %q", role, err, want)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s waited %v before refusing", role, took)
		}
	}
	if _, err := n.Daemon(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("another flowpin daemon (pid %d) already runs", os.Getpid())) {
		t.Errorf("second daemon: %v", err)
	}
	hd.Release()
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatalf("apply after the daemon stopped: %v", err)
	}
	h.Release()
}

// A daemon that starts while an apply holds the writer lock waits for it;
// the apply, once done, does not write beside it.
func TestDaemonWaitsForApply(t *testing.T) {
	dir := t.TempDir()
	n := testNS(t, dir, "net-1-1")
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		hd, err := n.Daemon()
		got <- err
		hd.Release()
	}()
	select {
	case err := <-got:
		t.Fatalf("daemon started beside an apply: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	h.Release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// An apply that waited for the writer lock while a daemon started does not
// write once it gets the lock: the daemon is next.
func TestWaitingApplyYieldsToDaemon(t *testing.T) {
	dir := t.TempDir()
	n := testNS(t, dir, "net-1-1")
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		h2, err := n.Writer("apply")
		h2.Release()
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // the second apply is waiting
	// The daemon's first step: its own lock (it then waits for the writer
	// lock, as the apply does).
	d, err := acquire(n.path("daemon"), "run", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.release()
	h.Release()
	var de *DaemonError
	if err := <-got; !errors.As(err, &de) {
		t.Errorf("waiting apply, after a daemon claimed the namespace: %v, want a DaemonError", err)
	}
}

// A stale file (its holder gone) is no lock; a directory of another user is
// refused, one of ours that others can write is tightened, and files others
// planted in it are not trusted.
func TestStaleFileAndUnsafeDir(t *testing.T) {
	dir := t.TempDir()
	n := testNS(t, dir, "net-1-1")
	for _, kind := range []string{"lock", "daemon"} {
		if err := os.WriteFile(n.path(kind), []byte("999999 apply\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatalf("stale files: %v", err)
	}
	h.Release()

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	// Ours but open to others: tightened, and what others planted there
	// meanwhile is not trusted.
	planted := testNS(t, open, "net-1-1")
	if os.Geteuid() == 0 {
		if err := os.WriteFile(planted.path("daemon"), []byte("1 run\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(planted.path("daemon"), 65534, 65534); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(planted.path("daemon"), unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil { // "held" by its planter
			t.Fatal(err)
		}
	}
	h, err = planted.Writer("apply")
	if err != nil {
		t.Errorf("world-writable lock directory of ours: %v", err)
	} else {
		h.Release()
	}
	if fi, err := os.Stat(open); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("lock directory mode %v (%v), want it tightened to 0755", fi.Mode().Perm(), err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(t.TempDir(), "other")
		if err := os.Mkdir(other, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := testNS(t, other, "net-1-1").Writer("apply"); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("lock directory of another user: %v", err)
		}
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := testNS(t, link, "net-1-1").Writer("apply"); err == nil {
		t.Error("lock directory behind a symlink accepted")
	}
}

// The kernel drops a killed holder's lock: SIGKILL never leaves a
// namespace locked.
func TestKilledHolder(t *testing.T) {
	if dir := os.Getenv("NSLOCK_TEST_HOLD"); dir != "" {
		h, err := testNS(t, dir, "net-1-1").Daemon()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		defer h.Release()
		fmt.Println("held")
		time.Sleep(time.Minute)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledHolder$")
	cmd.Env = append(os.Environ(), "NSLOCK_TEST_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "held\n" {
		t.Fatalf("helper: %q", line)
	}
	n := testNS(t, dir, "net-1-1")
	var de *DaemonError
	if _, err := n.Writer("apply"); !errors.As(err, &de) || de.PID != cmd.Process.Pid {
		t.Fatalf("beside the helper's daemon lock: %v, want pid %d", err, cmd.Process.Pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	h, err := n.Writer("apply")
	if err != nil {
		t.Fatalf("after SIGKILL of the holder: %v", err)
	}
	h.Release()
	hd, err := n.Daemon()
	if err != nil {
		t.Fatalf("daemon after SIGKILL of the old one: %v", err)
	}
	hd.Release()
}
