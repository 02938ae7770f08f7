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
// that copy this namespace's conntrack table to an HA peer. Telling
// another process's namespace needs the right to inspect it (root, or
// CAP_SYS_PTRACE); without it the answer is an error, not "none".
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
		if err != nil || strings.TrimSpace(string(comm)) != "conntrackd" {
			continue // gone meanwhile, or another program
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
