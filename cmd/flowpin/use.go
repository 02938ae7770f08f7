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
	"flowpin/lb/daemon"
	"flowpin/lb/health"
	"flowpin/lb/nslock"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/rules"
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
	owned, err := k.routes.Owned()
	if err != nil {
		return err
	}
	fams, err := useFamilies(c, i, d, cur.Records, owned)
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}
	l := c.Links[i]
	// Said only where the config routes the family at all: an IPv4-only
	// router needs no word on IPv6 at every use.
	for fi, has := range []func(config.Link) bool{config.Link.HasV4, config.Link.HasV6} {
		if f := fams[fi]; f.Why != "" && slices.ContainsFunc(c.Links, has) {
			a.log.Warn(fmt.Sprintf("use: link %s carries no %s now (%s): the command's %s connections are refused", name, f.Name, f.Why, f.Name))
		}
	}
	// The daemon, if one runs, may know the link is down or on standby.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	hs, herr := daemon.QueryHealth(ctx)
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

	if err := nslock.OwnDir(nslock.DefaultDir); err != nil {
		return fmt.Errorf("use: %w", err)
	}
	g, err := cgroup.Create(fmt.Sprintf("flowpin/use-%d", os.Getpid()), nslock.DefaultDir)
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}
	defer func() {
		if err := g.Remove(); err != nil {
			a.log.Error("use: clean up", "err", err)
		}
	}()
	a.sweepUses(g, k.nft)
	u := nft.Use{Table: nft.UseTable(os.Getpid()), CgroupID: g.ID, Level: g.Level, Mask: c.MarkMask, Mark: l.Mark,
		Unreachable4: fams[0].Why != "", Unreachable6: fams[1].Why != ""}
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

// familyUse is what an address family of the link means for a use.
type familyUse struct {
	Name string // IPv4, IPv6
	// Why the link carries none of the family now; "" when it does.
	Why string
	// InConfig: the link has the family in its config (a gateway).
	InConfig bool
}

// useFamilies says which address families link i of c carries in the
// kernel now, given the records in flowpin's table and the rules and
// routes flowpin owns. The mark use gives the command's packets routes
// them by the link's table only if the link's fwmark rule is there and
// the table has a default route: without either, they fall through to
// the rules after it and leave by another link. It is an error if the
// link is not in the applied state at all (never applied with this
// config, or applied with another mark or table), or carries neither
// family. d is the plan, for the reason a family is not usable.
func useFamilies(c *config.Config, i int, d *plan.Desired, records nft.Records, owned rules.State) ([2]familyUse, error) {
	l := c.Links[i]
	rec, ok := records.Link(l.Name)
	switch {
	case !ok:
		return [2]familyUse{}, fmt.Errorf("link %s is not applied in this network namespace (flowpin's table has no record of it): flowpin apply -c %s first", l.Name, c.Path)
	case rec.Mark != l.Mark || rec.Table != l.Table:
		return [2]familyUse{}, fmt.Errorf("link %s is applied with mark %#x table %d, and %s gives it mark %#x table %d: flowpin apply -c %s first", l.Name, rec.Mark, rec.Table, c.Path, l.Mark, l.Table, c.Path)
	}
	fams := [2]familyUse{
		{Name: "IPv4", InConfig: l.HasV4()},
		{Name: "IPv6", InConfig: l.HasV6()},
	}
	for k, fam := range []int{rules.V4, rules.V6} {
		f := &fams[k]
		rule := slices.ContainsFunc(owned.Rules, func(r rules.Rule) bool {
			return r.Family == fam && !r.Src.IsValid() && r.Mark == l.Mark && r.Mask == c.MarkMask && r.Table == l.Table
		})
		route := slices.ContainsFunc(owned.Routes, func(r rules.Route) bool {
			return r.Family == fam && r.Table == l.Table && r.Dst.Bits() == 0 && r.Type == ""
		})
		why := ""
		if fam == rules.V4 {
			why = d.Links[i].Why
		} else {
			why = d.Links[i].V6.Why
		}
		switch {
		case rule && route:
		case !f.InConfig && fam == rules.V4:
			f.Why = "no gateway in " + c.Path
		case !f.InConfig:
			f.Why = "no gateway6 in " + c.Path
		case why != "":
			f.Why = why
		case !rule:
			f.Why = fmt.Sprintf("no ip rule for its mark %#x/%#x yet: flowpin apply", l.Mark, c.MarkMask)
		default:
			f.Why = fmt.Sprintf("its table %d has no default route yet: flowpin apply", l.Table)
		}
	}
	if fams[0].Why != "" && fams[1].Why != "" {
		var whys []string
		for _, f := range fams {
			if f.InConfig {
				whys = append(whys, f.Name+": "+f.Why)
			}
		}
		return fams, fmt.Errorf("link %s cannot carry traffic now (%s)", l.Name, strings.Join(whys, "; "))
	}
	return fams, nil
}

// sweepUses removes what a use killed by SIGKILL could not: its cgroup, once
// nothing runs in it any more, its table in this network namespace
// (cgroups are shared by all namespaces, so the cgroup may have been
// removed by a use elsewhere), and the mount point of the cgroup
// hierarchy it made. A use whose process lives, or whose command still
// runs in its cgroup, keeps its cgroup and table: its command's
// connections keep their link.
func (a *app) sweepUses(g *cgroup.Group, n *nft.Conn) {
	alive := func(pid int) bool {
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
	for _, name := range cgroup.SweepMounts(nslock.DefaultDir, alive) {
		a.log.Info("use: removed the cgroup mount point of a use that was killed", "dir", filepath.Join(nslock.DefaultDir, name))
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
