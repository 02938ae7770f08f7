// Package rulestest is an in-memory stand-in for rules.Kernel: interfaces,
// flowpin's rules and routes, other programs' rules and routes, and
// sysctls. It records every write as the command that does the same by
// hand, and fails writes on demand.
package rulestest

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"flowpin/rules"
)

// Fake holds a namespace's routing state in memory. The zero value is an
// empty namespace; fields may be set before use.
type Fake struct {
	mu sync.Mutex

	Ifaces map[string]rules.Iface
	// Rules and Routes are flowpin's (protocol 201).
	Rules  []rules.Rule
	Routes []rules.Route
	// Foreign are other programs' rules; ForeignRouteText their routes,
	// per table, as `ip route` prints them.
	Foreign          []rules.ForeignRule
	ForeignRouteText map[int][]string
	// Sysctls by key (net/ipv4/conf/wan1/rp_filter). Reading a missing
	// key fails, as /proc/sys does for a missing interface.
	Sysctls map[string]string

	// Transcript has one line per successful write, as the command that
	// does it by hand.
	Transcript []string
	// Hook, if set, is called with each write's command before it is
	// made; an error fails the write and nothing changes.
	Hook func(cmd string) error
	// ReadHook, if set, is called before each read with what is read
	// ("interfaces", "owned", "foreign rules", "foreign routes", or the
	// sysctl key); an error fails the read.
	ReadHook func(what string) error
}

func (f *Fake) read(what string) error {
	if f.ReadHook == nil {
		return nil
	}
	return f.ReadHook(what)
}

// New returns a Fake with the given interfaces and sysctls.
func New(ifaces map[string]rules.Iface, sysctls map[string]string) *Fake {
	return &Fake{Ifaces: maps.Clone(ifaces), Sysctls: maps.Clone(sysctls)}
}

// FailNth makes the nth write from now fail with err (n >= 1); other
// writes go through. It replaces any earlier Hook.
func (f *Fake) FailNth(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	count := 0
	f.Hook = func(string) error {
		count++
		if count == n {
			return err
		}
		return nil
	}
}

// FailWhen makes every write whose command matches fail with err. It
// replaces any earlier Hook.
func (f *Fake) FailWhen(match func(cmd string) bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Hook = func(cmd string) error {
		if match(cmd) {
			return err
		}
		return nil
	}
}

// Writes is the number of successful writes so far.
func (f *Fake) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.Transcript)
}

// ResetTranscript forgets the writes so far.
func (f *Fake) ResetTranscript() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Transcript = nil
}

func (f *Fake) write(cmd string) error {
	if f.Hook != nil {
		if err := f.Hook(cmd); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
	}
	f.Transcript = append(f.Transcript, cmd)
	return nil
}

// Interfaces returns a copy of Ifaces.
func (f *Fake) Interfaces() (map[string]rules.Iface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read("interfaces"); err != nil {
		return nil, err
	}
	out := make(map[string]rules.Iface, len(f.Ifaces))
	for k, v := range f.Ifaces {
		v.Addrs = slices.Clone(v.Addrs)
		v.Gateways = slices.Clone(v.Gateways)
		out[k] = v
	}
	return out, nil
}

// Owned returns flowpin's rules and routes, in the kernel's order.
func (f *Fake) Owned() (rules.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read("owned"); err != nil {
		return rules.State{}, err
	}
	return rules.State{Rules: f.sortedRules(), Routes: f.sortedRoutes()}, nil
}

// ForeignRules returns Foreign.
func (f *Fake) ForeignRules() ([]rules.ForeignRule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read("foreign rules"); err != nil {
		return nil, err
	}
	return slices.Clone(f.Foreign), nil
}

// ForeignRoutes returns ForeignRouteText for the tables asked for.
func (f *Fake) ForeignRoutes(tables []int) (map[int][]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read("foreign routes"); err != nil {
		return nil, err
	}
	out := map[int][]string{}
	for _, t := range tables {
		if rs := f.ForeignRouteText[t]; len(rs) > 0 {
			out[t] = slices.Clone(rs)
		}
	}
	return out, nil
}

// Do applies one op as the kernel would: an add of a rule already there
// and a delete of something gone succeed, and a route through a missing
// interface fails.
func (f *Fake) Do(op rules.Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op.Kind == rules.ReplaceRoute {
		devs := []string{op.Route.Dev}
		for _, nh := range op.Route.Nexthops {
			devs = append(devs, nh.Dev)
		}
		for _, d := range devs {
			if _, ok := f.Ifaces[d]; d != "" && !ok {
				return fmt.Errorf("%s: interface %s: no such device", op.Command(), d)
			}
		}
		// As the kernel (ip6_route_multipath_add): an IPv6 multipath leg
		// must name a next hop.
		for _, nh := range op.Route.Nexthops {
			if op.Route.Family == rules.V6 && !nh.Gw.IsValid() {
				return fmt.Errorf("%s: Device only routes can not be added for IPv6 using the multipath API", op.Command())
			}
		}
	}
	if err := f.write(op.Command()); err != nil {
		return err
	}
	switch op.Kind {
	case rules.AddRule:
		if !slices.Contains(f.Rules, op.Rule) {
			f.Rules = append(f.Rules, op.Rule)
		}
	case rules.DelRule:
		f.Rules = slices.DeleteFunc(f.Rules, func(r rules.Rule) bool { return r == op.Rule })
	case rules.ReplaceRoute:
		r := op.Route
		r.Nexthops = slices.Clone(r.Nexthops)
		if i := slices.IndexFunc(f.Routes, func(o rules.Route) bool { return o.Key() == r.Key() }); i >= 0 {
			f.Routes[i] = r
		} else {
			f.Routes = append(f.Routes, r)
		}
	case rules.DelRoute:
		f.Routes = slices.DeleteFunc(f.Routes, func(o rules.Route) bool { return o.Key() == op.Route.Key() })
	}
	return nil
}

// ErrNoSysctl is what reading a missing sysctl returns.
var ErrNoSysctl = errors.New("no such file or directory")

// ReadSysctl returns Sysctls[key].
func (f *Fake) ReadSysctl(key string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.read(key); err != nil {
		return "", err
	}
	v, ok := f.Sysctls[key]
	if !ok {
		return "", fmt.Errorf("read sysctl %s: %w", key, ErrNoSysctl)
	}
	return v, nil
}

// WriteSysctl sets Sysctls[s.Key].
func (f *Fake) WriteSysctl(s rules.Sysctl) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write(s.Command()); err != nil {
		return err
	}
	if f.Sysctls == nil {
		f.Sysctls = map[string]string{}
	}
	f.Sysctls[s.Key] = s.Value
	return nil
}

func (f *Fake) sortedRules() []rules.Rule {
	rs := slices.Clone(f.Rules)
	slices.SortStableFunc(rs, func(a, b rules.Rule) int {
		return cmp.Or(cmp.Compare(a.Family, b.Family), cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Selector(), b.Selector()))
	})
	return rs
}

func (f *Fake) sortedRoutes() []rules.Route {
	rs := slices.Clone(f.Routes)
	slices.SortStableFunc(rs, func(a, b rules.Route) int {
		return cmp.Or(cmp.Compare(a.Family, b.Family), cmp.Compare(a.Table, b.Table), cmp.Compare(a.Dst.String(), b.Dst.String()))
	})
	return rs
}

// Dump renders the whole state the way `ip rule`, `ip route show table
// all` and `sysctl` print it, for golden files and before/after
// comparisons.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	b.WriteString("# ip rule\n")
	type line struct {
		prio int
		text string
	}
	var lines []line
	for _, r := range f.sortedRules() {
		lines = append(lines, line{r.Priority, fmt.Sprintf("%d:\t%s proto %d", r.Priority, r.Selector(), rules.Protocol)})
	}
	for _, r := range f.Foreign {
		lines = append(lines, line{r.Priority, r.Text})
	}
	slices.SortStableFunc(lines, func(a, b line) int { return cmp.Compare(a.prio, b.prio) })
	for _, l := range lines {
		b.WriteString(l.text + "\n")
	}
	b.WriteString("# ip route show table all\n")
	for _, r := range f.sortedRoutes() {
		b.WriteString(r.Spec() + "\n")
	}
	for _, t := range slices.Sorted(maps.Keys(f.ForeignRouteText)) {
		for _, r := range f.ForeignRouteText[t] {
			b.WriteString(r + "\n")
		}
	}
	b.WriteString("# sysctl\n")
	for _, k := range slices.Sorted(maps.Keys(f.Sysctls)) {
		b.WriteString(rules.Sysctl{Key: k, Value: f.Sysctls[k]}.Name() + " = " + f.Sysctls[k] + "\n")
	}
	return b.String()
}
