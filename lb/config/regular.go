package config

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// NotRegularError is a path that names no regular file.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is not a regular file but %s", e.Path, fileKind(e.Mode))
}

// OpenRegular opens path to read, following a symlink, and refuses
// anything but a regular file. The daemon reads files others may have
// put in its way (set files, leases, its own state), so:
//   - O_NONBLOCK: open(2) of a FIFO with no writer would wait for one,
//     and apply or the daemon's loop with it (fifo(7)); a regular file
//     ignores the flag;
//   - a FIFO, a device (/dev/zero) or a directory is refused: reading one
//     may never end.
func OpenRegular(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	return f, fi, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "of mode " + m.Type().String()
}
