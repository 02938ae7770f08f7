package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"flowpin/cgroup"
	"flowpin/lb/config"
	"flowpin/lb/ctl"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
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
killed with SIGKILL cannot clean up: the next use removes its table and
cgroup once nothing runs in the cgroup any more (flowpin down removes
every use's table). flowpin use exits with the command's exit status. flowpin must be applied (apply or
run) in this network namespace.`,
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
	i := slices.IndexFunc(c.Links, func(l config.Link) bool { return l.Name == name })
	if i < 0 {
		var names []string
		for _, l := range c.Links {
			names = append(names, l.Name)
		}
		return fmt.Errorf("use: no link %q in %s (links: %v)", name, c.Path, names)
	}
	cur, err := k.nft.Read()
	if err != nil {
		return err
	}
	if !cur.Exists {
		return errors.New("use: flowpin is not applied in this network namespace (flowpin apply, or flowpin run)")
	}
	d, err := k.PrepareWith(c, plan.Options{MissingOK: true})
	if err != nil {
		return err
	}
	if l := d.Links[i]; !l.Usable {
		return fmt.Errorf("use: link %s cannot carry traffic: %s", name, l.Why)
	}
	l := c.Links[i]
	// The daemon, if one runs, may know the link is down or on standby.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	hs, herr := ctl.Client{}.Health(ctx)
	cancel()
	for _, h := range hs {
		if herr == nil && h.Name == name && h.State != health.StateUp {
			a.log.Warn("use: the daemon reports the link "+string(h.State)+"; running the command anyway", "link", name, "family", h.Family, "reason", h.Reason)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}

	g, err := cgroup.Create(fmt.Sprintf("flowpin/use-%d", os.Getpid()))
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}
	defer func() {
		if err := g.Remove(); err != nil {
			a.log.Error("use: clean up", "err", err)
		}
	}()
	a.sweepUses(g, k.nft)
	u := nft.Use{Table: nft.UseTable(os.Getpid()), CgroupID: g.ID, Level: g.Level, Mask: c.MarkMask, Mark: l.Mark}
	// Signals before the table: a SIGTERM from here on still cleans up.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := k.nft.AddUse(u); err != nil {
		return fmt.Errorf("use: %w", err)
	}
	defer func() {
		if err := k.nft.RemoveUse(u.Table); err != nil {
			a.log.Error("use: clean up", "err", err)
		}
	}()
	fd, err := g.Open()
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}
	child := exec.Command(path, argv[1:]...)
	child.Args[0] = argv[0]
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	err = child.Start()
	fd.Close()
	if err != nil {
		return fmt.Errorf("use: start %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = child.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return exitCode(128 + int(ws.Signal()))
				}
				return exitCode(ee.ExitCode())
			}
			return err
		}
	}
}

// sweepUses removes what a use killed by SIGKILL could not: its cgroup, once
// nothing runs in it any more, and its table in this network namespace
// (cgroups are shared by all namespaces, so the cgroup may have been
// removed by a use elsewhere). A use whose process lives, or whose command
// still runs in its cgroup, is left alone: its command's connections keep
// their link.
func (a *app) sweepUses(g *cgroup.Group, n *nft.Conn) {
	alive := func(pid int) bool {
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
	for _, name := range g.SweepSiblings("use-", func(name string) bool {
		pid, err := strconv.Atoi(strings.TrimPrefix(name, "use-"))
		return err != nil || pid <= 0 || alive(pid)
	}) {
		a.log.Info("use: removed the cgroup of a use that was killed", "cgroup", "flowpin/"+name)
	}
	tables, err := n.UseTables()
	if err != nil {
		a.log.Warn("use: list the tables of earlier uses", "err", err)
	}
	for _, t := range tables {
		pid, err := strconv.Atoi(strings.TrimPrefix(t, nft.UseTablePrefix))
		if err != nil || pid <= 0 || alive(pid) {
			continue
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(g.Dir), fmt.Sprintf("use-%d", pid))); !errors.Is(err, os.ErrNotExist) {
			continue // its command still runs
		}
		if err := n.RemoveUse(t); err != nil {
			a.log.Warn("use: remove the table of a use that was killed", "table", t, "err", err)
			continue
		}
		a.log.Info("use: removed the table of a use that was killed", "table", t)
	}
}
