package nslock

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Cookie is the network namespace's cookie (SO_NETNS_COOKIE, socket(7),
// Linux 5.14): unlike its nsfs inode, which a namespace created after
// this one is gone may get again, it is never given to another namespace
// in the same boot. 0 on a kernel without it.
func Cookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if errors.Is(err, unix.ENOPROTOOPT) {
		return 0, nil
	}
	return c, err
}
