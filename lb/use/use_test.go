package use

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"flowpin/lb/apply"
	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
	"flowpin/nft"
	"flowpin/nft/nfttest"
	"flowpin/rules"
	"flowpin/rules/rulestest"
)

var (
	_ Host   = (*fakeHost)(nil)
	_ Tables = (*nfttest.Fake)(nil)
)

// rig is a namespace where flowpin was applied, through the fakes, and
// a Runner on it as the process with pid 42.
type rig struct {
	t      *testing.T
	routes *rulestest.Fake
	nft    *nfttest.Fake
	host   *fakeHost
	logs   bytes.Buffer
	r      *Runner
}

// routers: wan1 and wwan0 dual-stack (wwan0's IPv6 gateway from router
// advertisements), wan3 IPv4 only.
func routerIfaces() map[string]rules.Iface {
	return map[string]rules.Iface{
		"wan1":  {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")}},
		"wwan0": {Name: "wwan0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("2001:db8:2::2/64")}, Gateways: []netip.Addr{netip.MustParseAddr("fe80::1")}},
		"wan3":  {Name: "wan3", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.2/24")}},
	}
}

var sysctls = map[string]string{
	"net/ipv4/conf/wan1/rp_filter":       "1",
	"net/ipv4/conf/wwan0/rp_filter":      "1",
	"net/ipv4/conf/wan3/rp_filter":       "1",
	"net/ipv4/fib_multipath_hash_fields": "7",
	"net/ipv4/fib_multipath_hash_policy": "0",
	"net/ipv4/fib_multipath_use_neigh":   "0",
	"net/ipv6/fib_multipath_hash_fields": "7",
	"net/ipv6/fib_multipath_hash_policy": "0",
	"net/ipv6/conf/wwan0/forwarding":     "1",
	"net/ipv6/conf/wwan0/accept_ra":      "2",
}

// newRig applies applied (a config's YAML; "" for none) and gives a
// Runner with the config use (its YAML).
func newRig(t *testing.T, applied, use string) *rig {
	t.Helper()
	g := &rig{t: t, routes: rulestest.New(routerIfaces(), sysctls), nft: &nfttest.Fake{}, host: newFakeHost()}
	if applied != "" {
		k := apply.New(g.routes, g.nft)
		d, err := k.Prepare(configtest.MustParse(t, applied))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Apply(d); err != nil {
			t.Fatal(err)
		}
	}
	g.nft.ResetTranscript()
	// One log of what both fakes did, in order.
	g.nft.Hook = func(script string) error {
		g.host.mu.Lock()
		defer g.host.mu.Unlock()
		g.host.record("%s", script)
		return nil
	}
	g.host.alive[42] = true
	g.r = &Runner{Config: configtest.MustParse(t, use), Kernel: apply.New(g.routes, g.nft), Tables: g.nft, Host: g.host,
		Log: slog.New(slog.NewTextHandler(&g.logs, &slog.HandlerOptions{ReplaceAttr: noTime})), Pid: 42}
	return g
}

// runBounded is Run, failing the test when it has not returned after
// 10 s: a signal use did not pass on leaves the command running.
func (g *rig) runBounded(link string, argv []string) (int, error) {
	g.t.Helper()
	type ran struct {
		code int
		err  error
	}
	done := make(chan ran, 1)
	go func() {
		code, err := g.r.Run(link, argv)
		done <- ran{code, err}
	}()
	select {
	case r := <-done:
		return r.code, r.err
	case <-time.After(10 * time.Second):
		g.t.Fatal("Run has not returned 10 s after the signals")
		return 0, nil
	}
}

func (g *rig) hostLog() string {
	g.host.mu.Lock()
	defer g.host.mu.Unlock()
	return strings.Join(g.host.log, "\n")
}

// clean fails the test if the use left its table or cgroup, or still
// relays signals.
func (g *rig) clean() {
	g.t.Helper()
	if uses := g.nft.Uses(); len(uses) != 0 {
		g.t.Errorf("tables left: %v", uses)
	}
	g.host.mu.Lock()
	defer g.host.mu.Unlock()
	if _, ok := g.host.groups["/flowpin/use-42"]; ok {
		g.t.Error("the use's cgroup is left")
	}
	if g.host.notified != nil {
		g.t.Errorf("signals %v still relayed", g.host.notified)
	}
}

const dualWAN = `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: '2001:db8:1::1'}
  - {name: lte, interface: wwan0, gateway: 198.51.100.1, gateway6: auto}
  - {name: dsl, interface: wan3, gateway: 203.0.113.1}
`

// A use makes its cgroup, relays signals, then adds its table, and only
// then starts the command inside the cgroup: its first packet is
// marked, and a signal from the table on still cleans up. At the end,
// the table, the relay and the cgroup go, in the reverse order.
func TestRunStartsInItsCgroupWithItsTable(t *testing.T) {
	g := newRig(t, dualWAN, dualWAN)
	var atStart map[string]nft.Use
	g.host.onStart = func() { atStart = g.nft.Uses() }
	code, err := g.r.Run("lte", []string{"curl", "-s", "http://192.0.2.80/"})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	want := `create cgroup flowpin/use-42
relay signals [interrupt terminated hangup quit]
nft add table inet flowpin_use_42 # socket cgroupv2 level 2 id 4242: refuse [], mark 0x200/0xff00
start /usr/bin/curl ["curl" "-s" "http://192.0.2.80/"] in /flowpin/use-42
nft delete table inet flowpin_use_42
stop relaying signals
remove cgroup /flowpin/use-42`
	if got := g.hostLog(); got != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, want)
	}
	wantUse := nft.Use{Table: "flowpin_use_42", CgroupID: 4242, Level: 2, Mask: 0xff00, Mark: 0x200}
	if u := atStart["flowpin_use_42"]; u != wantUse || len(atStart) != 1 {
		t.Errorf("tables when the command started: %+v, want %+v", atStart, wantUse)
	}
	g.clean()
	if g.logs.Len() != 0 {
		t.Errorf("logged:\n%s", g.logs.String())
	}
}

// The command's exit status is use's; a command killed by a signal gives
// 128 plus its number, as the shell reports it. Either way use cleans up.
func TestRunExitStatus(t *testing.T) {
	for _, tc := range []struct {
		exit Exit
		want int
	}{
		{Exit{Code: 0}, 0},
		{Exit{Code: 7}, 7},
		{Exit{Code: 255}, 255},
		{Exit{Signal: syscall.SIGKILL}, 137},
		{Exit{Signal: syscall.SIGSEGV}, 139},
	} {
		t.Run(fmt.Sprintf("%+v", tc.exit), func(t *testing.T) {
			g := newRig(t, dualWAN, dualWAN)
			g.host.child = func(p *fakeProcess) { p.exit <- tc.exit }
			if code, err := g.r.Run("isp1", []string{"sh", "-c", "x"}); err != nil || code != tc.want {
				t.Errorf("Run = %d, %v; want %d", code, err, tc.want)
			}
			g.clean()
		})
	}
}

// Signals sent to use go to the command, also one that came before the
// command started; use ends when the command does, with its status.
func TestRunForwardsSignals(t *testing.T) {
	for _, tc := range []struct {
		name string
		// early comes as the table is added, before the command runs;
		// late once it runs.
		early, late []os.Signal
		// dies: the signal the command does not handle.
		dies os.Signal
		want int
	}{
		{name: "SIGTERM kills the command", late: []os.Signal{syscall.SIGTERM}, dies: syscall.SIGTERM, want: 143},
		{name: "SIGINT before it started", early: []os.Signal{syscall.SIGINT}, dies: syscall.SIGINT, want: 130},
		{name: "SIGHUP handled, then SIGQUIT", late: []os.Signal{syscall.SIGHUP, syscall.SIGQUIT}, dies: syscall.SIGQUIT, want: 131},
		{name: "handled, and the command exits by itself", late: []os.Signal{syscall.SIGTERM}, want: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, dualWAN, dualWAN)
			added := false
			g.nft.Hook = func(script string) error {
				if !added && strings.HasPrefix(script, "nft add table inet flowpin_use_42") {
					added = true
					for _, s := range tc.early {
						g.host.sigs <- s
					}
				}
				return nil
			}
			g.host.child = func(p *fakeProcess) {
				n := 0
				p.onSignal = func(s os.Signal) {
					n++
					switch {
					case s == tc.dies:
						p.killedBy(s)
					case n == len(tc.early)+len(tc.late):
						p.exit <- Exit{Code: 3}
					}
				}
				for _, s := range tc.late {
					g.host.sigs <- s
				}
			}
			code, err := g.runBounded("isp1", []string{"sh", "-c", "x"})
			if err != nil || code != tc.want {
				t.Errorf("Run = %d, %v; want %d", code, err, tc.want)
			}
			if got, want := g.host.started.received(), append(slices.Clone(tc.early), tc.late...); !slices.Equal(got, want) {
				t.Errorf("the command received %v, want %v", got, want)
			}
			g.clean()
		})
	}
}

func noTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// A use removes what uses killed by SIGKILL left: the mount points and
// cgroups of those whose process has ended, and their tables once their
// cgroup is gone. The cgroup and table of a use whose process lives, or
// whose command still runs in its cgroup, stay: that command keeps its
// link.
func TestRunSweepsKilledUses(t *testing.T) {
	g := newRig(t, dualWAN, dualWAN)
	h := g.host
	// 100: killed, its command ended. 200: still running. 300: killed,
	// its command still runs (busy). 500: killed, its cgroup removed by
	// a use in another namespace. 600: killed outside any table's
	// namespace. 201: running, its cgroup not beside ours (another
	// cgroup namespace's). use-x, flowpin_use_x: not a use's.
	h.alive[200], h.alive[201] = true, true
	h.groups = map[string]bool{"/flowpin/use-100": false, "/flowpin/use-200": false, "/flowpin/use-300": true,
		"/flowpin/use-x": false, "/flowpin/other-7": false, "/elsewhere/use-700": false}
	h.mounts = []int{100, 200, 600}
	for _, pid := range []int{100, 200, 201, 300, 500} {
		if err := g.nft.AddUse(nft.Use{Table: nft.UseTable(pid), CgroupID: uint64(pid), Level: 2, Mask: 0xff00, Mark: 0x100}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.nft.AddUse(nft.Use{Table: "flowpin_use_x"}); err != nil {
		t.Fatal(err)
	}
	h.log = nil
	if code, err := g.r.Run("isp1", []string{"curl"}); err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	want := `create cgroup flowpin/use-42
remove mount point /run/flowpin/cgroup2-100
remove mount point /run/flowpin/cgroup2-600
remove cgroup /flowpin/use-100
nft delete table inet flowpin_use_100
nft delete table inet flowpin_use_500
relay signals [interrupt terminated hangup quit]
`
	if got := g.hostLog(); !strings.HasPrefix(got, want) {
		t.Errorf("transcript:\n%s\nwant it to begin:\n%s", got, want)
	}
	if got := slices.Sorted(maps.Keys(g.nft.Uses())); !slices.Equal(got, []string{"flowpin_use_200", "flowpin_use_201", "flowpin_use_300", "flowpin_use_x"}) {
		t.Errorf("tables left %v", got)
	}
	if got := slices.Sorted(maps.Keys(h.groups)); !slices.Equal(got, []string{"/elsewhere/use-700", "/flowpin/other-7", "/flowpin/use-200", "/flowpin/use-300", "/flowpin/use-x"}) {
		t.Errorf("cgroups left %v", got)
	}
	if !slices.Equal(h.mounts, []int{200}) {
		t.Errorf("mount points left %v", h.mounts)
	}
	wantLogs := `level=INFO msg="use: removed the cgroup mount point of a use that was killed" dir=/run/flowpin/cgroup2-100
level=INFO msg="use: removed the cgroup mount point of a use that was killed" dir=/run/flowpin/cgroup2-600
level=INFO msg="use: removed the cgroup of a use that was killed" cgroup=flowpin/use-100
level=INFO msg="use: removed the table of a use that was killed" table=flowpin_use_100
level=INFO msg="use: removed the table of a use that was killed" table=flowpin_use_500
`
	if g.logs.String() != wantLogs {
		t.Errorf("logged:\n%s\nwant:\n%s", g.logs.String(), wantLogs)
	}
}

// A sweep that fails is said and does not stop the use.
func TestRunSweepFailures(t *testing.T) {
	g := newRig(t, dualWAN, dualWAN)
	for _, pid := range []int{100, 101} {
		if err := g.nft.AddUse(nft.Use{Table: nft.UseTable(pid)}); err != nil {
			t.Fatal(err)
		}
	}
	g.nft.Hook = func(script string) error {
		if script == "nft delete table inet flowpin_use_100" {
			return errBoom
		}
		return nil
	}
	if code, err := g.r.Run("isp1", []string{"curl"}); err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	want := `level=WARN msg="use: remove the table of a use that was killed" table=flowpin_use_100 err="nft: boom"
level=INFO msg="use: removed the table of a use that was killed" table=flowpin_use_101
`
	if g.logs.String() != want {
		t.Errorf("logged:\n%s\nwant:\n%s", g.logs.String(), want)
	}
	if g.host.started == nil {
		t.Error("the command did not run")
	}

	g = newRig(t, dualWAN, dualWAN)
	listErr := errors.New("no tables for you")
	g.r.Tables = failingList{g.nft, listErr}
	if code, err := g.r.Run("isp1", []string{"curl"}); err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if want := "level=WARN msg=\"use: list the tables of earlier uses\" err=\"no tables for you\"\n"; g.logs.String() != want {
		t.Errorf("logged:\n%s\nwant:\n%s", g.logs.String(), want)
	}
	g.clean()
}

type failingList struct {
	*nfttest.Fake
	err error
}

func (f failingList) UseTables() ([]string, error) { return nil, f.err }

// A use that cannot route its command by the link says so in one line
// before it makes anything or runs the command.
func TestRunRefuses(t *testing.T) {
	only1 := "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1}\n"
	for _, tc := range []struct {
		name          string
		applied, use  string
		link, command string
		setup         func(*rig)
		want          string
	}{
		{name: "unknown link", applied: dualWAN, use: dualWAN, link: "isp9",
			want: `use: no link "isp9" in f.yaml (links: [isp1 lte dsl])`},
		{name: "flowpin not applied", use: dualWAN, link: "lte",
			want: "use: flowpin is not applied in this network namespace (flowpin apply, or flowpin run)"},
		{name: "link not applied", applied: only1, use: dualWAN, link: "lte",
			want: "use: link lte is not applied in this network namespace (flowpin's table has no record of it): flowpin apply -c f.yaml first"},
		{name: "link applied with another mark", applied: dualWAN, use: strings.Replace(dualWAN, "gateway6: auto}", "gateway6: auto, mark: 0x500}", 1), link: "lte",
			want: "use: link lte is applied with mark 0x200 table 102, and f.yaml gives it mark 0x500 table 102: flowpin apply -c f.yaml first"},
		{name: "link carries neither family", applied: dualWAN, use: dualWAN, link: "lte",
			setup: func(g *rig) {
				w := g.routes.Ifaces["wwan0"]
				w.Up = false
				g.routes.Ifaces["wwan0"] = w
				// The kernel removes the routes through a device that
				// goes down.
				g.routes.Routes = slices.DeleteFunc(g.routes.Routes, func(r rules.Route) bool { return r.Table == 102 })
			},
			want: "use: link lte cannot carry traffic now (IPv4: interface wwan0 is down; IPv6: interface wwan0 is down)"},
		{name: "link's rules gone", applied: dualWAN, use: dualWAN, link: "dsl",
			setup: func(g *rig) {
				g.routes.Rules = slices.DeleteFunc(g.routes.Rules, func(r rules.Rule) bool { return r.Table == 103 })
			},
			want: "use: link dsl cannot carry traffic now (IPv4: no ip rule for its mark 0x300/0xff00 yet: flowpin apply)"},
		{name: "command not found", applied: dualWAN, use: dualWAN, link: "lte", command: "nosuch",
			want: `use: exec: "nosuch": executable file not found in $PATH`},
		{name: "table unreadable", applied: dualWAN, use: dualWAN, link: "lte",
			setup: func(g *rig) { g.nft.ReadErr = errBoom },
			want:  "boom"},
		{name: "rules unreadable", applied: dualWAN, use: dualWAN, link: "lte",
			setup: func(g *rig) {
				g.routes.ReadHook = func(what string) error {
					if what == "owned" {
						return errBoom
					}
					return nil
				}
			},
			want: "boom"},
		{name: "interfaces unreadable", applied: dualWAN, use: dualWAN, link: "lte",
			setup: func(g *rig) {
				g.routes.ReadHook = func(what string) error {
					if what == "interfaces" {
						return errBoom
					}
					return nil
				}
			},
			want: "boom"},
		{name: "no cgroup", applied: dualWAN, use: dualWAN, link: "lte",
			setup: func(g *rig) { g.host.createErr = errors.New("create cgroup: read-only file system") },
			want:  "use: create cgroup: read-only file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, tc.applied, tc.use)
			if tc.setup != nil {
				tc.setup(g)
			}
			command := tc.command
			if command == "" {
				command = "curl"
			}
			code, err := g.r.Run(tc.link, []string{command})
			if err == nil || err.Error() != tc.want || code != 0 {
				t.Errorf("Run = %d, %v; want %s", code, err, tc.want)
			}
			if log := g.hostLog(); log != "" {
				t.Errorf("made:\n%s", log)
			}
			if g.host.started != nil {
				t.Error("the command ran")
			}
		})
	}
}

// Once the cgroup is made, a failure undoes what was made, and the
// command does not run.
func TestRunFailureCleansUp(t *testing.T) {
	g := newRig(t, dualWAN, dualWAN)
	g.nft.Hook = func(script string) error {
		g.host.record("%s", script)
		if strings.HasPrefix(script, "nft add table") {
			return errBoom
		}
		return nil
	}
	if code, err := g.r.Run("lte", []string{"curl"}); err == nil || err.Error() != "use: nft: boom" || code != 0 {
		t.Errorf("Run with the table refused = %d, %v", code, err)
	}
	want := `create cgroup flowpin/use-42
relay signals [interrupt terminated hangup quit]
nft add table inet flowpin_use_42 # socket cgroupv2 level 2 id 4242: refuse [], mark 0x200/0xff00
stop relaying signals
remove cgroup /flowpin/use-42`
	if got := g.hostLog(); got != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, want)
	}
	g.clean()

	g = newRig(t, dualWAN, dualWAN)
	g.host.startErr = errors.New("start curl: fork/exec /usr/bin/curl: permission denied")
	if code, err := g.r.Run("lte", []string{"curl"}); err == nil || err.Error() != "use: start curl: fork/exec /usr/bin/curl: permission denied" || code != 0 {
		t.Errorf("Run with the start failing = %d, %v", code, err)
	}
	g.clean()

	g = newRig(t, dualWAN, dualWAN)
	g.host.child = func(p *fakeProcess) {
		p.waitErr = errors.New("wait: no child processes")
		p.exit <- Exit{}
	}
	if code, err := g.r.Run("lte", []string{"curl"}); err == nil || err.Error() != "wait: no child processes" || code != 0 {
		t.Errorf("Run with the wait failing = %d, %v", code, err)
	}
	g.clean()
}

// A clean-up that fails is said; the command's status is still use's.
func TestRunCleanupFailureIsLogged(t *testing.T) {
	g := newRig(t, dualWAN, dualWAN)
	g.host.removeErr = errors.New("remove cgroup /sys/fs/cgroup/flowpin/use-42: device or resource busy")
	g.nft.Hook = func(script string) error {
		if strings.HasPrefix(script, "nft delete") {
			return errBoom
		}
		return nil
	}
	g.host.child = func(p *fakeProcess) { p.exit <- Exit{Code: 4} }
	if code, err := g.r.Run("lte", []string{"curl"}); err != nil || code != 4 {
		t.Errorf("Run = %d, %v; want 4", code, err)
	}
	want := `level=ERROR msg="use: clean up" err="nft: boom"
level=ERROR msg="use: clean up" err="remove cgroup /sys/fs/cgroup/flowpin/use-42: device or resource busy"
`
	if g.logs.String() != want {
		t.Errorf("logged:\n%s\nwant:\n%s", g.logs.String(), want)
	}
}

// A family the link cannot carry now is refused to the command rather
// than left to another link, and said where the config routes that
// family at all.
func TestRunFamilyItCannotCarry(t *testing.T) {
	v4only := "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1}\n  - {name: dsl, interface: wan3, gateway: 203.0.113.1}\n"
	for _, tc := range []struct {
		name         string
		config, link string
		setup        func(*rig)
		want4, want6 bool
		warn         string
	}{
		{name: "dual-stack", config: dualWAN, link: "isp1"},
		{name: "IPv4-only link beside dual-stack ones", config: dualWAN, link: "dsl", want6: true,
			warn: `level=WARN msg="use: link dsl carries no IPv6 now (no gateway6 in f.yaml): the command's IPv6 connections are refused"`},
		{name: "IPv4-only config", config: v4only, link: "dsl", want6: true},
		{name: "no router advertisement now", config: dualWAN, link: "lte", want6: true,
			setup: func(g *rig) {
				w := g.routes.Ifaces["wwan0"]
				w.Gateways = nil
				g.routes.Ifaces["wwan0"] = w
				// As a resync leaves it: no IPv6 default route in the
				// link's table without a gateway to give it.
				g.routes.Routes = slices.DeleteFunc(g.routes.Routes, func(r rules.Route) bool { return r.Table == 102 && r.Family == rules.V6 })
			},
			warn: `level=WARN msg="use: link lte carries no IPv6 now (interface wwan0 has no IPv6 default route in main to take the gateway from yet (router advertisements)): the command's IPv6 connections are refused"`},
		{name: "IPv4 route gone", config: dualWAN, link: "isp1", want4: true,
			setup: func(g *rig) {
				g.routes.Routes = slices.DeleteFunc(g.routes.Routes, func(r rules.Route) bool { return r.Table == 101 && r.Family == rules.V4 })
			},
			warn: `level=WARN msg="use: link isp1 carries no IPv4 now (its table 101 has no default route yet: flowpin apply): the command's IPv4 connections are refused"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, tc.config, tc.config)
			if tc.setup != nil {
				tc.setup(g)
			}
			var u nft.Use
			g.host.onStart = func() { u = g.nft.Uses()["flowpin_use_42"] }
			if code, err := g.r.Run(tc.link, []string{"curl"}); err != nil || code != 0 {
				t.Fatalf("Run = %d, %v", code, err)
			}
			if u.Unreachable4 != tc.want4 || u.Unreachable6 != tc.want6 {
				t.Errorf("unreachable: IPv4 %v, IPv6 %v; want %v, %v", u.Unreachable4, u.Unreachable6, tc.want4, tc.want6)
			}
			if got := strings.TrimSpace(g.logs.String()); got != tc.warn {
				t.Errorf("logged:\n%s\nwant:\n%s", got, tc.warn)
			}
		})
	}
}

// A running daemon that knows the link is down or on standby is quoted;
// the command runs anyway. Without a daemon nothing is said.
func TestRunDaemonHealth(t *testing.T) {
	for _, tc := range []struct {
		name string
		hs   []health.LinkHealth
		err  error
		want string
	}{
		{name: "down", hs: []health.LinkHealth{
			{Name: "isp1", Family: "ipv4", State: health.StateUp},
			{Name: "lte", Family: "ipv4", State: health.StateUp},
			{Name: "lte", Family: "ipv6", State: health.StateDown, Reason: "3 of 3 probes lost"},
		}, want: `level=WARN msg="use: the daemon reports the link down; running the command anyway" link=lte family=ipv6 reason="3 of 3 probes lost"`},
		{name: "another link down", hs: []health.LinkHealth{{Name: "isp1", Family: "ipv4", State: health.StateDown}}},
		{name: "no daemon", err: errors.New("dial unix /run/flowpin/daemon.sock: connect: no such file or directory")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, dualWAN, dualWAN)
			g.r.Health = func(ctx context.Context) ([]health.LinkHealth, error) {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("the daemon is asked without a deadline")
				}
				return tc.hs, tc.err
			}
			if code, err := g.r.Run("lte", []string{"curl"}); err != nil || code != 0 {
				t.Fatalf("Run = %d, %v", code, err)
			}
			if got := strings.TrimSpace(g.logs.String()); got != tc.want {
				t.Errorf("logged:\n%s\nwant:\n%s", got, tc.want)
			}
			if g.host.started == nil {
				t.Error("the command did not run")
			}
		})
	}
}
