package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// FuzzParse: no input panics the parser; every error is one short line
// that names the file and shows no raw control character; a config that
// parses, written back out with every value explicit, parses to the same
// config and keeps the invariants the planner relies on.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("../../examples/*.yaml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(twoLinks)
	f.Add(issueExample)
	f.Add(dualStack)
	f.Add(checksAndOps)
	for _, tc := range errorCases {
		if len(tc.yaml) <= 4096 {
			f.Add(tc.yaml)
		}
	}
	for _, tc := range policyErrorCases {
		if len(tc.yaml) <= 4096 {
			f.Add(tc.yaml)
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse("f.yaml", []byte(in))
		if err != nil {
			checkMessage(t, err.Error())
			return
		}
		checkInvariants(t, c)
		out := render(t, c)
		again, err := Parse("f.yaml", out)
		if err != nil {
			t.Fatalf("written back, the config no longer parses: %v\n%s", err, out)
		}
		if d := cmp.Diff(c, again, cmpConfig); d != "" {
			t.Fatalf("written back, the config parses differently (-first +again):\n%s\n%s", d, out)
		}
	})
}

// checksAndOps has every probe method, the quality keys, an on-demand
// link and a hook.
const checksAndOps = `links:
  - name: a
    interface: wan1
    gateway: 192.0.2.1
    check: {targets: [203.0.113.1, 203.0.113.2], quorum: 2, max_rtt: 150ms, max_loss: 12.5%, window: 20, hold_down: 30s, method: http, url: /health}
  - name: b
    interface: wan2
    gateway: 198.51.100.1
    check: {method: tcp, port: 443, interval: 1s, timeout: 800ms}
  - name: c
    interface: wan3
    gateway6: 'fe80::1%wan3'
    check: {method: dns, query: example.com, port: 5353}
  - name: d
    interface: wwan0
    gateway: auto
    tier: 2
    on_demand: {up: ifup wwan0, down: ifdown wwan0, keep: 90s}
hooks: {on_change: /bin/true, timeout: 5s}
`

// dualStack has a link of each family and one of both, and rules of each
// family.
const dualStack = `links:
  - {name: v4, interface: wan1, gateway: 192.0.2.1}
  - {name: v6, interface: wan2, gateway6: 'fe80::1%wan2', tier: 2}
  - {name: both, interface: wan3, gateway: auto, gateway6: auto}
policies:
  - {name: p, tiers: [[v6], [both, v4]], failback: flush}
rules:
  - {name: a, dst: ['2001:db8::/32'], policy: v6, sticky: 1m}
  - {name: b, src: [10.0.0.0/8, '2001:db8:1::/48'], proto: tcp, dst_ports: ["1-1024"], policy: p}
default_policy: both
`

func checkMessage(t *testing.T, msg string) {
	t.Helper()
	if !strings.HasPrefix(msg, "f.yaml:") && !strings.HasPrefix(msg, "f.yaml: ") {
		t.Fatalf("error does not start with the file: %q", msg)
	}
	if len(msg) > 400 {
		t.Fatalf("error of %d bytes: %q", len(msg), msg)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("error is not valid UTF-8: %q", msg)
	}
	for _, r := range msg {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			t.Fatalf("error carries control character %U: %q", r, msg)
		}
	}
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if len(c.Links) == 0 || len(c.Links) > MaxLinks {
		t.Fatalf("%d links", len(c.Links))
	}
	if err := CheckTableID(int64(c.BalanceTable)); err != nil {
		t.Fatalf("balance_table %d %v", c.BalanceTable, err)
	}
	tables := map[int]bool{c.BalanceTable: true}
	marks := map[uint32]bool{}
	// Every table and mark is valid; explicit ones are also distinct
	// (Assign moves a default out of their way).
	for _, l := range c.Links {
		if err := CheckTableID(int64(l.Table)); err != nil || (l.TableSet && tables[l.Table]) {
			t.Fatalf("link %s table %d: %v (or used twice)", l.Name, l.Table, err)
		}
		if err := CheckMark(int64(l.Mark), c.MarkMask); err != nil || (l.MarkSet && marks[l.Mark]) {
			t.Fatalf("link %s mark %#x: %v (or used twice)", l.Name, l.Mark, err)
		}
		if l.TableSet {
			tables[l.Table] = true
		}
		if l.MarkSet {
			marks[l.Mark] = true
		}
		if !validName(l.Name) || !validInterface(l.Interface) || l.Weight < 1 || l.Weight > MaxWeight {
			t.Fatalf("link %+v", l)
		}
		if l.GatewayAuto && l.Gateway.IsValid() || l.Gateway6Auto && l.Gateway6.IsValid() || !l.HasV4() && !l.HasV6() {
			t.Fatalf("link %s: gateway %v, auto %v; gateway6 %v, auto %v", l.Name, l.Gateway, l.GatewayAuto, l.Gateway6, l.Gateway6Auto)
		}
		if l.Gateway.IsValid() && !l.Gateway.Is4() || l.Gateway6.IsValid() && (!l.Gateway6.Is6() || l.Gateway6.Is4In6() || l.Gateway6.Zone() != "") {
			t.Fatalf("link %s: gateway %v, gateway6 %v", l.Name, l.Gateway, l.Gateway6)
		}
		if len(l.Check.Targets) > MaxTargets || l.Check.Quorum > max(1, len(l.Check.Targets)) {
			t.Fatalf("link %s check %+v", l.Name, l.Check)
		}
		if l.Tier < 1 || l.Tier > MaxTier {
			t.Fatalf("link %s tier %d", l.Name, l.Tier)
		}
	}
	checkPolicyInvariants(t, c)
}

// checkPolicyInvariants: what the planner relies on of policies and
// rules.
func checkPolicyInvariants(t *testing.T, c *Config) {
	t.Helper()
	if len(c.Policies) == 0 || c.Policies[0].Name != DefaultPolicy || !c.Policies[0].Implicit {
		t.Fatalf("policies[0] is not the implicit default: %+v", c.Policies)
	}
	if d := cmp.Diff(DefaultTiers(c.Links), c.Policies[0].Tiers); d != "" {
		t.Fatalf("default policy's tiers:\n%s", d)
	}
	names := map[string]bool{}
	for _, l := range c.Links {
		names[l.Name] = true
	}
	routed := 0
	for k, p := range c.Policies {
		if k > 0 {
			routed++
			if p.Implicit != names[p.Name] {
				t.Fatalf("policy %s: implicit %v, a link's name %v", p.Name, p.Implicit, names[p.Name])
			}
		}
		if k > 0 && p.Name == DefaultPolicy || p.Name == BypassPolicy || !validName(p.Name) {
			t.Fatalf("policy %d named %q", k, p.Name)
		}
		if i, _ := c.PolicyByName(p.Name); i != k {
			t.Fatalf("policy %s twice", p.Name)
		}
		if len(p.Tiers) == 0 || p.LastResort == "" || p.Failback == "" {
			t.Fatalf("policy %+v", p)
		}
		seen := map[int]bool{}
		for _, tier := range p.Tiers {
			if len(tier) == 0 {
				t.Fatalf("policy %s: empty tier", p.Name)
			}
			for _, i := range tier {
				if i < 0 || i >= len(c.Links) || seen[i] {
					t.Fatalf("policy %s: link %d out of range or twice", p.Name, i)
				}
				seen[i] = true
			}
		}
	}
	if c.Unmatched < 0 || c.Unmatched >= len(c.Policies) {
		t.Fatalf("Unmatched %d of %d policies", c.Unmatched, len(c.Policies))
	}
	marks := len(c.Links) + routed
	bypass := false
	for _, r := range c.Rules {
		if r.Target < -1 || r.Target >= len(c.Policies) || r.Bypass() != (r.Policy == BypassPolicy) {
			t.Fatalf("rule %s: target %d (policy %s)", r.Name, r.Target, r.Policy)
		}
		if !r.Bypass() && c.Policies[r.Target].Name != r.Policy {
			t.Fatalf("rule %s: policy %s, target %s", r.Name, r.Policy, c.Policies[r.Target].Name)
		}
		if (len(r.SrcPorts) > 0 || len(r.DstPorts) > 0) && r.Proto != TCP && r.Proto != UDP {
			t.Fatalf("rule %s: ports with proto %q", r.Name, r.Proto)
		}
		for _, pr := range append(slices.Clone(r.SrcPorts), r.DstPorts...) {
			if pr.Lo == 0 || pr.Hi < pr.Lo {
				t.Fatalf("rule %s: ports %+v", r.Name, pr)
			}
		}
		for _, p := range append(slices.Clone(r.Src), r.Dst...) {
			if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
				t.Fatalf("rule %s: prefix %v", r.Name, p)
			}
		}
		if r.Sticky != 0 && (r.Bypass() || r.Sticky < MinSticky || r.Sticky > MaxSticky) {
			t.Fatalf("rule %s: sticky %v", r.Name, r.Sticky)
		}
		if r.Sticky > 0 {
			routed++
			marks++
		}
		bypass = bypass || r.Bypass()
	}
	if bypass {
		marks++
	}
	if routed > MaxRoutedMarks || marks > len(AllMaskValues(c.MarkMask)) {
		t.Fatalf("%d routed marks, %d marks in all under %#x", routed, marks, c.MarkMask)
	}
}

// render writes c back as YAML with every value explicit, but for
// default tables and marks, which Assign may still move.
func render(t *testing.T, c *Config) []byte {
	t.Helper()
	i64 := func(v int64) *int64 { return &v }
	raw := rawConfig{MarkMask: i64(int64(c.MarkMask)), BalanceTable: i64(int64(c.BalanceTable)), PriorityBase: i64(int64(c.PriorityBase))}
	for _, l := range c.Links {
		gw, gw6 := "", ""
		switch {
		case l.GatewayAuto:
			gw = "auto"
		case l.Gateway.IsValid():
			gw = l.Gateway.String()
		}
		switch {
		case l.Gateway6Auto:
			gw6 = "auto"
		case l.Gateway6.IsValid():
			gw6 = l.Gateway6.String()
		}
		ch := l.Check
		rc := &rawCheck{Interval: &ch.Interval, Timeout: &ch.Timeout, Fall: i64(int64(ch.Fall)), Rise: i64(int64(ch.Rise)), Quorum: i64(int64(ch.Quorum))}
		for _, a := range ch.Targets {
			rc.Targets = append(rc.Targets, a.String())
		}
		renderQuality(rc, ch)
		rl := rawLink{Name: l.Name, Interface: l.Interface, Gateway: gw, Gateway6: gw6, Weight: i64(int64(l.Weight)), NAT: l.NAT, Check: rc}
		rl.Prefixes6 = rawPrefixes6{Set: l.Prefixes6Auto || len(l.Prefixes6) > 0, Auto: l.Prefixes6Auto}
		for _, p := range l.Prefixes6 {
			rl.Prefixes6.List = append(rl.Prefixes6.List, p.String())
		}
		if od := l.OnDemand; od != nil {
			rl.OnDemand = &rawOnDemand{Up: od.Up, Down: od.Down, Keep: &od.Keep}
		}
		if l.TableSet {
			rl.Table = i64(int64(l.Table))
		}
		if l.MarkSet {
			rl.Mark = i64(int64(l.Mark))
		}
		rl.Tier = i64(int64(l.Tier))
		renderDNS(&rl, l)
		renderQuota(&rl, l.Quota)
		raw.Links = append(raw.Links, rl)
	}
	for _, p := range c.Policies {
		if p.Implicit {
			continue
		}
		rp := rawPolicy{Name: p.Name, LastResort: string(p.LastResort), Failback: string(p.Failback)}
		for _, tier := range p.Tiers {
			var names []string
			for _, i := range tier {
				names = append(names, c.Links[i].Name)
			}
			rp.Tiers = append(rp.Tiers, names)
		}
		raw.Policies = append(raw.Policies, rp)
	}
	for _, r := range c.Rules {
		rr := rawRule{Name: r.Name, Proto: string(r.Proto), IIF: r.IIF, Policy: r.Policy}
		if r.Proto == AnyProto {
			rr.Proto = "any"
		}
		for _, p := range r.Src {
			rr.Src = append(rr.Src, p.String())
		}
		for _, p := range r.Dst {
			rr.Dst = append(rr.Dst, p.String())
		}
		rr.SrcPorts = renderPorts(r.SrcPorts)
		rr.DstPorts = renderPorts(r.DstPorts)
		if r.Sticky > 0 {
			rr.Sticky = &r.Sticky
		}
		rr.SrcSet, rr.DstSet = r.SrcSet, r.DstSet
		raw.Rules = append(raw.Rules, rr)
	}
	if c.Unmatched != 0 {
		raw.DefaultPolicy = c.Policies[c.Unmatched].Name
	}
	for _, s := range c.Sets {
		rs := rawSet{Name: s.Name, Domains: s.Domains, Resolve: s.Resolve, Files: s.Files}
		if s.Domain() {
			rs.Timeout = &s.Timeout
		}
		for _, p := range s.Addresses {
			rs.Addresses = append(rs.Addresses, p.String())
		}
		raw.Sets = append(raw.Sets, rs)
	}
	raw.Hooks = &rawHooks{OnChange: c.Hooks.OnChange, Timeout: &c.Hooks.Timeout}
	out, err := yaml.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// renderQuality writes the check's quality and method keys, each only
// where the config allows it (a port with icmp, say, is an error).
func renderQuality(rc *rawCheck, ch HealthCheck) {
	i64 := func(v int64) *int64 { return &v }
	str := func(v string) *string { return &v }
	if ch.MaxRTT > 0 {
		rc.MaxRTT = &ch.MaxRTT
	}
	if ch.MaxLoss > 0 {
		rc.MaxLoss = str(strconv.FormatFloat(ch.MaxLoss*100, 'g', -1, 64) + "%")
	}
	rc.Window = i64(int64(ch.Window))
	rc.HoldDown = &ch.HoldDown
	rc.Method = str(string(ch.Method))
	if ch.Port != 0 {
		rc.Port = i64(int64(ch.Port))
	}
	if ch.Method == ProbeHTTP {
		rc.URL = &ch.URL
	}
	if ch.Method == ProbeDNS {
		rc.Query = &ch.Query
	}
	if ch.Method == ProbeExec {
		rc.Command = &ch.Command
	}
}

// renderQuota writes q back with every value explicit.
func renderQuota(rl *rawLink, q *Quota) {
	if q == nil {
		return
	}
	period := string(q.Period)
	rq := &rawQuota{Bytes: strconv.FormatUint(q.Bytes, 10), Period: &period}
	switch q.Period {
	case Monthly:
		d := int64(q.StartDay)
		rq.StartDay = &d
	case FixedDays:
		period = fmt.Sprintf("%dd", q.Days)
		start := q.Start.Format(time.DateOnly)
		rq.Start = &start
	}
	rl.Quota, rl.QuotaLastResort = rq, &q.LastResort
}

func renderPorts(rs []PortRange) []string {
	var out []string
	for _, r := range rs {
		s := fmt.Sprint(r.Lo)
		if r.Hi != r.Lo {
			s += fmt.Sprintf("-%d", r.Hi)
		}
		out = append(out, s)
	}
	return out
}
