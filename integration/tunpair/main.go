// Command tunpair is a point-to-point link between two network namespaces,
// for the integration tests and the demo: a tun device in each, and this
// process copying packets between them. It has the kernel properties of a
// PPP session or a WireGuard interface (POINTOPOINT, NOARP, link/none), and
// behaves like one: killing the process removes both interfaces, as the
// end of a session does, and SIGSTOP makes a silent failure with the
// carrier still up.
//
//	tunpair NS_A IF_A NS_B IF_B
//
// A namespace is a name under /run/netns or a path. It prints "ready" once
// both interfaces exist; they are left down and without addresses.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: tunpair NS_A IF_A NS_B IF_B")
		os.Exit(2)
	}
	a, err := openTun(os.Args[1], os.Args[2])
	if err != nil {
		fail(err)
	}
	b, err := openTun(os.Args[3], os.Args[4])
	if err != nil {
		fail(err)
	}
	fmt.Println("ready")
	errs := make(chan error, 2)
	go func() { errs <- copyPackets(b, a) }()
	go func() { errs <- copyPackets(a, b) }()
	fail(<-errs)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tunpair:", err)
	os.Exit(1)
}

// openTun creates tun device name in namespace ns. The kernel puts a tun
// device in the namespace of the thread that opens /dev/net/tun, so the
// open happens on a locked thread moved there, which is then thrown away.
func openTun(ns, name string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := func() (int, error) {
			path := ns
			if !strings.Contains(ns, "/") {
				path = filepath.Join("/run/netns", ns)
			}
			h, err := netns.GetFromPath(path)
			if err != nil {
				return -1, fmt.Errorf("namespace %s: %w", ns, err)
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				return -1, fmt.Errorf("enter %s: %w", ns, err)
			}
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, fmt.Errorf("open /dev/net/tun: %w", err)
			}
			ifr, err := unix.NewIfreq(name)
			if err != nil {
				unix.Close(fd)
				return -1, err
			}
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(ifr))); e != 0 {
				unix.Close(fd)
				return -1, fmt.Errorf("create %s in %s: %w", name, ns, e)
			}
			return fd, nil
		}()
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// copyPackets moves every packet read from src to dst. A packet dst cannot
// take (its interface is down) is dropped, as on a wire.
func copyPackets(dst, src int) error {
	buf := make([]byte, 65536)
	for {
		n, err := unix.Read(src, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if _, err := unix.Write(dst, buf[:n]); err != nil && err != unix.EIO && err != unix.EINTR {
			return fmt.Errorf("write: %w", err)
		}
	}
}
