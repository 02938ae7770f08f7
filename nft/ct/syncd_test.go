package ct

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeProc is a /proc with this process's network namespace and the
// processes given (pid: comm, namespace); they run as root, but for a
// comm ending in "@1000" (that uid).
func fakeProc(t *testing.T, procs map[string][2]string) string {
	t.Helper()
	root := t.TempDir()
	add := func(pid, comm, ns string) {
		if err := os.MkdirAll(filepath.Join(root, pid, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if comm != "" {
			uid := "0"
			if c, u, ok := strings.Cut(comm, "@"); ok {
				comm, uid = c, u
			}
			if err := os.WriteFile(filepath.Join(root, pid, "comm"), []byte(comm+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			status := fmt.Sprintf("Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t%s\t%s\t%s\t%s\nGid:\t0\t0\t0\t0\n", comm, uid, uid, uid, uid)
			if err := os.WriteFile(filepath.Join(root, pid, "status"), []byte(status), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(ns, filepath.Join(root, pid, "ns", "net")); err != nil {
			t.Fatal(err)
		}
	}
	add("self", "", "net:[4026532001]")
	for pid, p := range procs {
		add(pid, p[0], p[1])
	}
	return root
}

func TestSyncDaemons(t *testing.T) {
	here, there := "net:[4026532001]", "net:[4026531840]"
	for _, tc := range []struct {
		name  string
		procs map[string][2]string
		want  []int
	}{
		{"one here", map[string][2]string{"300": {"conntrackd", here}, "12": {"keepalived", here}}, []int{300}},
		{"only in another namespace (the peer's, on one host)", map[string][2]string{"301": {"conntrackd", there}}, nil},
		{"none", map[string][2]string{"1": {"init", there}}, nil},
		{"a name that is not a pid", map[string][2]string{"sys": {"conntrackd", here}}, nil},
		{"a user's program of that name", map[string][2]string{"302": {"conntrackd@1000", here}, "303": {"conntrackd", here}}, []int{303}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SyncDaemons(fakeProc(t, tc.procs))
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := SyncDaemons(t.TempDir()); err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("no /proc/self: %v", err)
	}
}

// The real /proc: a process named conntrackd in this namespace counts;
// one in another namespace does not.
func TestSyncDaemonsInNamespace(t *testing.T) {
	_, ns := namedNetns(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // for the other user's copy
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "conntrackd")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(args ...string) *exec.Cmd {
		c := exec.Command(args[0], args[1:]...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c
	}
	here := start(bin, "30")
	there := start("ip", "netns", "exec", ns, bin, "30")
	// Any user can run a program of that name; setpriv execs it.
	user := start("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "30")
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := SyncDaemons("/proc")
		if err != nil {
			t.Fatal(err)
		}
		// ip netns exec execs the program: the same pid, once it has.
		named := func(c *exec.Cmd) bool {
			comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.Process.Pid), "comm"))
			return strings.TrimSpace(string(comm)) == "conntrackd"
		}
		if slices.Contains(pids, here.Process.Pid) && named(there) && named(user) {
			if slices.Contains(pids, there.Process.Pid) {
				t.Errorf("a conntrackd in another namespace counted: %v", pids)
			}
			if slices.Contains(pids, user.Process.Pid) {
				t.Errorf("a user's program named conntrackd counted: %v", pids)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("conntrackd (pid %d) here not found: %v", here.Process.Pid, pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
