// Package use runs one command whose connections all leave by one link
// (`flowpin use`): the command runs in a cgroup v2 of its own, and an
// nftables table of its own gives its sockets' packets the link's mark.
// The cgroup and the process are reached through Host, the table through
// Tables: CgroupFS and nft.Conn on a real system, fakes in tests.
package use

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
)

// Host is what a use needs of cgroup v2 and of processes: CgroupFS on a
// real system.
type Host interface {
	// LookPath finds a command as the shell would.
	LookPath(name string) (string, error)
	// Create makes the cgroup rel ("flowpin/use-PID"), with its parents.
	Create(rel string) (*Group, error)
	// Remove kills whatever still runs in g (a daemon the command left
	// behind would otherwise lose its routing silently) and deletes it.
	Remove(g *Group) error
	// Start starts argv (path is argv[0] found) inside g, with this
	// process's stdin, stdout and stderr: it is there from its first
	// instruction on, so not even its first socket is made outside.
	Start(g *Group, path string, argv []string) (Process, error)
	// Signals relays the given signals to the channel, instead of their
	// default action, until stop is called.
	Signals(sig ...os.Signal) (c <-chan os.Signal, stop func())
	// Alive says whether process pid exists.
	Alive(pid int) bool
	// SweepSiblings deletes the groups beside g whose names start with
	// prefix and that keep says need not be kept; a group that still
	// has processes cannot be deleted and stays. It returns the names
	// deleted.
	SweepSiblings(g *Group, prefix string, keep func(name string) bool) []string
	// HasSibling says whether the group name is beside g.
	HasSibling(g *Group, name string) bool
	// SweepMounts removes the mount points of the cgroup hierarchy that
	// Create made for processes that alive says have ended, and returns
	// their paths.
	SweepMounts(alive func(pid int) bool) []string
}

// Group is one cgroup v2 directory.
type Group struct {
	// Dir is its directory; Rel its path under the hierarchy's root
	// ("/flowpin/use-123") and Level the number of parts of Rel.
	Dir   string
	Rel   string
	Level uint32
	// ID is the directory's inode number: the kernel's cgroup id, which
	// `socket cgroupv2` compares.
	ID uint64
	// Mounted is the mount point Create made because the hierarchy was
	// not mounted (ip netns exec gives a fresh /sys without it), which
	// Remove unmounts; "" when it made none.
	Mounted string
}

// Process is a started command.
type Process interface {
	Signal(os.Signal) error
	// Wait waits for the command to end.
	Wait() (Exit, error)
}

// Exit is how a command ended: with an exit status, or killed by a
// signal.
type Exit struct {
	Code   int
	Signal syscall.Signal
}

// Tables is what a use needs of nftables: nft.Conn on a real system,
// nfttest.Fake in tests.
type Tables interface {
	// AddUse creates a use's table in one transaction.
	AddUse(nft.Use) error
	// RemoveUse deletes a use's table; a missing one is not an error.
	RemoveUse(table string) error
	// UseTables lists the tables of running (or killed) uses.
	UseTables() ([]string, error)
}

var (
	_ Host   = (*CgroupFS)(nil)
	_ Tables = (*nft.Conn)(nil)
)

// Runner runs commands under a link, in one network namespace.
type Runner struct {
	// Config is the config resolved against the namespace (each link's
	// mark and table as applied).
	Config *config.Config
	// Kernel reads what flowpin applied: the table's records, the rules
	// and routes it owns, and the interfaces to plan with.
	Kernel *apply.Kernel
	Tables Tables
	Host   Host
	// Health, if set, asks a running daemon for the links' health; it
	// fails when none runs.
	Health func(context.Context) ([]health.LinkHealth, error)
	Log    *slog.Logger
	// Pid is this process's id: its cgroup is flowpin/use-Pid and its
	// table flowpin_use_Pid, so a later use can tell whether it still
	// runs.
	Pid int
}

// Signals are passed on to the command rather than ending use: the
// command decides, and use cleans up once it has ended.
var Signals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// Run runs argv with every connection it opens leaving by link, and
// returns its exit status: a command killed by a signal gives 128 plus
// the signal's number, as the shell reports it. Anything the command left
// running is killed at its end, and the cgroup and table removed. A link
// not applied in the namespace, or one that carries neither family now,
// is refused before anything is made.
func (r *Runner) Run(link string, argv []string) (int, error) {
	c := r.Config
	i := slices.IndexFunc(c.Links, func(l config.Link) bool { return l.Name == link })
	if i < 0 {
		var names []string
		for _, l := range c.Links {
			names = append(names, l.Name)
		}
		return 0, fmt.Errorf("use: no link %q in %s (links: %v)", link, c.Path, names)
	}
	cur, err := r.Kernel.NFT.Read()
	if err != nil {
		return 0, err
	}
	if !cur.Exists {
		return 0, errors.New("use: flowpin is not applied in this network namespace (flowpin apply, or flowpin run)")
	}
	d, err := r.Kernel.PrepareWith(c, plan.Options{MissingOK: true})
	if err != nil {
		return 0, err
	}
	owned, err := r.Kernel.Routes.Owned()
	if err != nil {
		return 0, err
	}
	fams, err := families(c, i, d, cur.Records, owned)
	if err != nil {
		return 0, fmt.Errorf("use: %w", err)
	}
	l := c.Links[i]
	// Said only where the config routes the family at all: an IPv4-only
	// router needs no word on IPv6 at every use.
	for fi, has := range []func(config.Link) bool{config.Link.HasV4, config.Link.HasV6} {
		if f := fams[fi]; f.Why != "" && slices.ContainsFunc(c.Links, has) {
			r.Log.Warn(fmt.Sprintf("use: link %s carries no %s now (%s): the command's %s connections are refused", link, f.Name, f.Why, f.Name))
		}
	}
	r.warnHealth(link)
	path, err := r.Host.LookPath(argv[0])
	if err != nil {
		return 0, fmt.Errorf("use: %w", err)
	}

	g, err := r.Host.Create(fmt.Sprintf("flowpin/use-%d", r.Pid))
	if err != nil {
		return 0, fmt.Errorf("use: %w", err)
	}
	defer func() {
		if err := r.Host.Remove(g); err != nil {
			r.Log.Error("use: clean up", "err", err)
		}
	}()
	r.sweep(g)
	u := nft.Use{Table: nft.UseTable(r.Pid), CgroupID: g.ID, Level: g.Level, Mask: c.MarkMask, Mark: l.Mark,
		Unreachable4: fams[0].Why != "", Unreachable6: fams[1].Why != ""}
	// Signals before the table: a SIGTERM from here on still cleans up.
	sigs, stop := r.Host.Signals(Signals...)
	defer stop()
	if err := r.Tables.AddUse(u); err != nil {
		return 0, fmt.Errorf("use: %w", err)
	}
	defer func() {
		if err := r.Tables.RemoveUse(u.Table); err != nil {
			r.Log.Error("use: clean up", "err", err)
		}
	}()
	child, err := r.Host.Start(g, path, argv)
	if err != nil {
		return 0, fmt.Errorf("use: %w", err)
	}
	type waited struct {
		exit Exit
		err  error
	}
	done := make(chan waited, 1)
	go func() {
		e, err := child.Wait()
		done <- waited{e, err}
	}()
	for {
		select {
		case s := <-sigs:
			_ = child.Signal(s)
		case w := <-done:
			switch {
			case w.err != nil:
				return 0, w.err
			case w.exit.Signal != 0:
				return 128 + int(w.exit.Signal), nil
			}
			return w.exit.Code, nil
		}
	}
}

// warnHealth says so when a running daemon knows link is down or on
// standby; the command runs anyway.
func (r *Runner) warnHealth(link string) {
	if r.Health == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	hs, err := r.Health(ctx)
	cancel()
	if err != nil {
		return
	}
	for _, h := range hs {
		if h.Name == link && h.State != health.StateUp {
			r.Log.Warn("use: the daemon reports the link "+string(h.State)+"; running the command anyway", "link", link, "family", h.Family, "reason", h.Reason)
		}
	}
}

// sweep removes what a use killed by SIGKILL could not: its cgroup, once
// nothing runs in it any more, its table in this network namespace
// (cgroups are shared by all namespaces, so the cgroup may have been
// removed by a use elsewhere), and the mount point of the cgroup
// hierarchy it made. A use whose process lives, or whose command still
// runs in its cgroup, keeps its cgroup and table: its command's
// connections keep their link.
func (r *Runner) sweep(g *Group) {
	h := r.Host
	for _, dir := range h.SweepMounts(h.Alive) {
		r.Log.Info("use: removed the cgroup mount point of a use that was killed", "dir", dir)
	}
	for _, name := range h.SweepSiblings(g, "use-", func(name string) bool {
		pid, err := strconv.Atoi(strings.TrimPrefix(name, "use-"))
		return err != nil || pid <= 0 || h.Alive(pid)
	}) {
		r.Log.Info("use: removed the cgroup of a use that was killed", "cgroup", "flowpin/"+name)
	}
	tables, err := r.Tables.UseTables()
	if err != nil {
		r.Log.Warn("use: list the tables of earlier uses", "err", err)
	}
	for _, t := range tables {
		pid, err := strconv.Atoi(strings.TrimPrefix(t, nft.UseTablePrefix))
		if err != nil || pid <= 0 || h.Alive(pid) {
			continue
		}
		if h.HasSibling(g, fmt.Sprintf("use-%d", pid)) {
			continue // its command still runs
		}
		if err := r.Tables.RemoveUse(t); err != nil {
			r.Log.Warn("use: remove the table of a use that was killed", "table", t, "err", err)
			continue
		}
		r.Log.Info("use: removed the table of a use that was killed", "table", t)
	}
}
