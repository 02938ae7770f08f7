package ct

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// SyncDaemons are the pids of the conntrackd processes that share the
// caller's network namespace, read from procRoot (/proc): the daemons
// that copy this namespace's conntrack table to an HA peer. Only
// processes running as root count: conntrackd needs CAP_NET_ADMIN, and
// any user can run a program of that name (one in a user namespace of
// its own may even hold the capability there, and share this network
// namespace). Telling another process's namespace needs the right to
// inspect it (root, or CAP_SYS_PTRACE); without it the answer is an
// error, not "none".
func SyncDaemons(procRoot string) ([]int, error) {
	self, err := os.Readlink(filepath.Join(procRoot, "self", "ns", "net"))
	if err != nil {
		return nil, fmt.Errorf("read this process's network namespace: %w", err)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	var denied error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "conntrackd" || !runsAsRoot(filepath.Join(procRoot, e.Name(), "status")) {
			continue // gone meanwhile, another program, or not root's
		}
		ns, err := os.Readlink(filepath.Join(procRoot, e.Name(), "ns", "net"))
		switch {
		case errors.Is(err, fs.ErrPermission):
			denied = fmt.Errorf("conntrackd (pid %d): cannot read its network namespace: %w", pid, err)
		case err == nil && ns == self:
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 && denied != nil {
		return nil, denied
	}
	slices.Sort(pids)
	return pids, nil
}

// runsAsRoot says whether the process whose /proc/PID/status is at path
// has effective uid 0, as seen from this user namespace (the uids there
// are mapped into the reader's).
func runsAsRoot(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			return len(f) >= 2 && f[1] == "0"
		}
	}
	return false
}
