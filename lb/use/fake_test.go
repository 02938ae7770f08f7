package use

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// fakeHost is a Host in memory: cgroups that are empty or busy, mount
// points, processes that live or have ended, and a command whose
// behaviour the test gives. log has every call that changes something,
// in order.
type fakeHost struct {
	mu sync.Mutex
	// path finds commands: name -> path; others are not found.
	path map[string]string
	// groups: every group (by Rel, "/flowpin/use-100") -> busy (a
	// process runs in it).
	groups map[string]bool
	// mounts: the pids of the mount points cgroup2-PID.
	mounts []int
	// alive: the processes that exist.
	alive map[int]bool
	// createErr, removeErr, startErr fail Create, Remove, Start.
	createErr, removeErr, startErr error
	// child, if set, is called as the command starts, and must not
	// block: it ends the command with p.exit (at once, or later from a
	// goroutine or its onSignal). Without it the command exits 0 at
	// once.
	child func(p *fakeProcess)
	// onStart, if set, is called at Start, before the command runs.
	onStart func()

	sigs     chan os.Signal
	notified []os.Signal
	started  *fakeProcess
	log      []string
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		path:   map[string]string{"curl": "/usr/bin/curl", "sh": "/bin/sh"},
		groups: map[string]bool{},
		alive:  map[int]bool{},
		sigs:   make(chan os.Signal, 4),
	}
}

func (h *fakeHost) record(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf(format, args...))
}

func (h *fakeHost) LookPath(name string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.path[name]; ok {
		return p, nil
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}

func (h *fakeHost) Create(rel string) (*Group, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.createErr != nil {
		return nil, h.createErr
	}
	h.record("create cgroup %s", rel)
	h.groups["/"+rel] = false
	return &Group{Dir: "/sys/fs/cgroup/" + rel, Rel: "/" + rel, Level: uint32(strings.Count(rel, "/") + 1), ID: 4242}, nil
}

func (h *fakeHost) Remove(g *Group) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("remove cgroup %s", g.Rel)
	if h.removeErr != nil {
		return h.removeErr
	}
	delete(h.groups, g.Rel)
	return nil
}

func (h *fakeHost) Start(g *Group, path string, argv []string) (Process, error) {
	h.mu.Lock()
	if h.onStart != nil {
		h.onStart()
	}
	h.record("start %s %q in %s", path, argv, g.Rel)
	if h.startErr != nil {
		h.mu.Unlock()
		return nil, h.startErr
	}
	p := &fakeProcess{exit: make(chan Exit, 1)}
	h.started = p
	child := h.child
	h.mu.Unlock()
	if child == nil {
		p.exit <- Exit{}
	} else {
		child(p)
	}
	return p, nil
}

func (h *fakeHost) Signals(sig ...os.Signal) (<-chan os.Signal, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("relay signals %v", sig)
	h.notified = sig
	return h.sigs, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.record("stop relaying signals")
		h.notified = nil
	}
}

func (h *fakeHost) Alive(pid int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.alive[pid]
}

func (h *fakeHost) SweepSiblings(g *Group, prefix string, keep func(name string) bool) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, rel := range slices.Sorted(maps.Keys(h.groups)) {
		dir, name := path.Split(rel)
		if path.Clean(dir) != path.Dir(g.Rel) || rel == g.Rel || !strings.HasPrefix(name, prefix) || h.groups[rel] {
			continue
		}
		h.mu.Unlock()
		k := keep(name)
		h.mu.Lock()
		if !k {
			h.record("remove cgroup %s", rel)
			delete(h.groups, rel)
			out = append(out, name)
		}
	}
	return out
}

func (h *fakeHost) HasSibling(g *Group, name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.groups[path.Join(path.Dir(g.Rel), name)]
	return ok
}

func (h *fakeHost) SweepMounts(alive func(pid int) bool) []string {
	h.mu.Lock()
	mounts := slices.Clone(h.mounts)
	h.mu.Unlock()
	var out []string
	var left []int
	for _, pid := range mounts {
		if alive(pid) {
			left = append(left, pid)
			continue
		}
		out = append(out, fmt.Sprintf("/run/flowpin/cgroup2-%d", pid))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, dir := range out {
		h.record("remove mount point %s", dir)
	}
	h.mounts = left
	return out
}

// fakeProcess is a started command: signals sent to it are kept, and it
// ends with what is sent on exit.
type fakeProcess struct {
	mu      sync.Mutex
	signals []os.Signal
	// onSignal, if set, is what the command does on a signal.
	onSignal func(os.Signal)
	exit     chan Exit
	// waitErr, if set, fails Wait.
	waitErr error
}

func (p *fakeProcess) Signal(s os.Signal) error {
	p.mu.Lock()
	p.signals = append(p.signals, s)
	f := p.onSignal
	p.mu.Unlock()
	if f != nil {
		f(s)
	}
	return nil
}

func (p *fakeProcess) Wait() (Exit, error) {
	e := <-p.exit
	p.mu.Lock()
	defer p.mu.Unlock()
	return e, p.waitErr
}

func (p *fakeProcess) received() []os.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.signals)
}

// killedBy ends the command as a signal with the default action does.
func (p *fakeProcess) killedBy(s os.Signal) { p.exit <- Exit{Signal: s.(syscall.Signal)} }

var errBoom = errors.New("boom")
