// Package statefile reads the daemon's state files (the operator's
// modes, the quotas' counts) only when nobody but the daemon's own user
// could have written them: the daemon acts on what they say (takes a
// link down, puts one on standby), so a file another local user wrote,
// in a directory a careless --operator-state or --quota-state pointed at
// (/tmp), must not be believed.
package statefile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/google/renameio/v2"

	"flowpin/lb/config"
)

// MaxSize is the largest state file read: far more than the links of a
// config need, and a bound on what a corrupt or planted file costs.
const MaxSize = 1 << 20

// euid is the user whose files are trusted (a seam for tests).
var euid = os.Geteuid

// Read reads path, following a symlink, and refuses a file that is not
// a regular file (a FIFO would block the read), that belongs to another
// user, that its group or others may write, or that is larger than
// MaxSize. A missing file is an error that matches os.ErrNotExist.
func Read(path string) ([]byte, error) {
	f, fi, err := config.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return nil, errors.New("no owner to check")
	case int(st.Uid) != euid():
		return nil, fmt.Errorf("belongs to uid %d, not to uid %d: another user could have written it", st.Uid, euid())
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("mode %v: others could have written it", fi.Mode().Perm())
	case fi.Size() > MaxSize:
		return nil, fmt.Errorf("%d bytes, more than a state file's %d", fi.Size(), MaxSize)
	}
	return io.ReadAll(io.LimitReader(f, MaxSize+1))
}

// Write replaces path with data atomically: a temporary file beside it,
// synced, then renamed over it (renameio), so a crash leaves the old
// version or the new one. The new file is 0644 whatever the old one's
// mode: one others could write must not hand that on.
func Write(path string, data []byte) error {
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithStaticPermissions(0o644))
	if err != nil {
		return err
	}
	defer func() { _ = f.Cleanup() }()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.CloseAtomicallyReplace()
}
