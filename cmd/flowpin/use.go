package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"flowpin/lb/ctl"
	"flowpin/lb/nslock"
	"flowpin/lb/use"
)

// exitCode ends flowpin with a command's own exit status, printing nothing.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func (a *app) useCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "use LINK -- COMMAND [ARG...]",
		Short: "Run a command whose connections all leave by one link",
		Long: `Run COMMAND so that every connection it (and whatever it starts) opens
leaves by LINK, whatever the traffic rules and weights say: to test one
ISP, or to send a backup job over the cheap line.

The command runs in a cgroup v2 of its own (flowpin/use-PID); an nftables
table of its own (inet flowpin_use_PID, just before flowpin's output
chain, so an apply or the daemon's resync never touches it) gives its
sockets' packets LINK's mark with "socket cgroupv2". No LD_PRELOAD: it
works for static binaries too. When the command exits, anything it left
running in the cgroup is killed and the table and the cgroup are removed
(also on SIGINT/SIGTERM, which are passed on to the command). A use
killed with SIGKILL cannot clean up: the next use removes the cgroup
hierarchy's mount point it made under /run/flowpin (when /sys/fs/cgroup
has none, as under ip netns exec), and its table and cgroup once nothing
runs in the cgroup any more (flowpin down removes every use's table).
flowpin use exits with the command's exit status.

flowpin must be applied (apply or run) in this network namespace, LINK
included: use refuses a link whose mark has no ip rule yet. An address
family LINK cannot carry now (no gateway6, its interface down) is
unreachable to the command instead of leaving by another link: its TCP
connects are reset, its other packets refused with ICMP.`,
		Example: "  flowpin use isp2 -- curl https://example.com/\n  flowpin use lte -- ping -c3 192.0.2.1",
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
				return errors.New("usage: flowpin use LINK -- COMMAND [ARG...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.use(args[0], args[1:])
		},
	}
}

func (a *app) use(name string, argv []string) error {
	k, c, err := a.openWithConfig()
	if err != nil {
		return err
	}
	defer k.Close()
	r := &use.Runner{Config: c, Kernel: k.Kernel, Tables: k.nft, Host: use.CgroupFS{MountDir: nslock.DefaultDir},
		Health: ctl.Client{}.Health, Log: a.log, Pid: os.Getpid()}
	code, err := r.Run(name, argv)
	if err != nil || code == 0 {
		return err
	}
	return exitCode(code)
}
