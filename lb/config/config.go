// Package config is flowpin's config model and its validation. It reads
// YAML and knows nothing of the kernel: the planner checks a config
// against the interfaces.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultPath is where the boot script and the daemon look for the config.
const DefaultPath = "/etc/flowpin/flowpin.yaml"

// Defaults. Each is overridable in the config; see README.md.
const (
	// DefaultMarkMask: eight bits of the packet and conntrack mark, the
	// same bits mwan3 uses. The rest stay free for other software.
	DefaultMarkMask = 0x0000ff00
	// DefaultBalanceTable holds the weighted multipath default route; link
	// i gets table DefaultBalanceTable+1+i.
	DefaultBalanceTable = 100
	// DefaultPriorityBase: flowpin's ip rules live in [base, base+400].
	// Below 32766 (main) and above 0 (local); clear of the 0-999 range
	// that hand-written rules and most tools use.
	DefaultPriorityBase = 1000
	// MaxLinks is bounded by the rule layout: 100 priorities per block.
	MaxLinks = 100
	// RulePrioritySpan is how far above PriorityBase flowpin's ip rules
	// reach; the planner lays them out inside [base, base+span].
	RulePrioritySpan = 400
	// MaxWeight is the kernel's limit: a nexthop weight is rtnh_hops+1,
	// and rtnh_hops is one byte.
	MaxWeight = 256
)

// Config is a validated flowpin configuration.
type Config struct {
	Path         string
	MarkMask     uint32
	BalanceTable int
	PriorityBase int
	Links        []Link

	lines lineIndex
}

// Link is one uplink.
type Link struct {
	Name      string
	Interface string
	// Gateway is the next hop. With GatewayAuto it is zero in the config
	// and the planner fills it from the interface's own default route.
	Gateway     netip.Addr
	GatewayAuto bool
	Weight      int
	NAT         bool
	Table       int
	Mark        uint32
	Check       HealthCheck
	// MarkSet, TableSet: Mark, Table come from the config. Otherwise they
	// are defaults by position, and plan.Assign gives the link the values
	// recorded for it by name when it was last applied.
	MarkSet, TableSet bool
}

// HealthCheck is how the daemon probes a link. Defaults are for a failover in
// about 1.5 s that does not flap on one lost packet: a round every 500 ms,
// 3 bad rounds to go down, 3 good rounds to come back.
type HealthCheck struct {
	// Targets answer ICMP echo. None: the gateway itself.
	Targets  []netip.Addr
	Interval time.Duration
	Timeout  time.Duration
	Fall     int // consecutive bad rounds before down
	Rise     int // consecutive good rounds before up
	Quorum   int // targets that must answer for a round to be good
}

// Check defaults.
const (
	DefaultInterval = 500 * time.Millisecond
	DefaultTimeout  = time.Second
	DefaultFall     = 3
	DefaultRise     = 3
	DefaultQuorum   = 1
)

// ConfigError names the file, the line and the field of a bad value.
type ConfigError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

type rawConfig struct {
	MarkMask     *int64    `yaml:"mark_mask"`
	BalanceTable *int64    `yaml:"balance_table"`
	PriorityBase *int64    `yaml:"priority_base"`
	Links        []rawLink `yaml:"links"`
}

type rawLink struct {
	Name      string    `yaml:"name"`
	Interface string    `yaml:"interface"`
	Gateway   string    `yaml:"gateway"`
	Weight    *int64    `yaml:"weight"`
	NAT       bool      `yaml:"nat"`
	Table     *int64    `yaml:"table"`
	Mark      *int64    `yaml:"mark"`
	Check     *rawCheck `yaml:"check"`
}

type rawCheck struct {
	Targets  []string       `yaml:"targets"`
	Interval *time.Duration `yaml:"interval"`
	Timeout  *time.Duration `yaml:"timeout"`
	Fall     *int64         `yaml:"fall"`
	Rise     *int64         `yaml:"rise"`
	Quorum   *int64         `yaml:"quorum"`
}

// Load reads and validates the file at path. It does not look at the
// kernel; Plan checks the config against the interfaces.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

var yamlLine = regexp.MustCompile(`line (\d+): (.*)`)

// Parse validates data as if read from path (used in messages).
func Parse(path string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(path, err)
	}
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ConfigError{File: path, Msg: "empty config: no links"}
		}
		return nil, yamlError(path, err)
	}
	c := &Config{Path: path, lines: lineIndex{root: &root}}
	if err := c.fill(&raw); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlError turns yaml.v3's multi-line messages into one line that starts
// with file:line.
func yamlError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		first := te.Errors[0]
		if m := yamlLine.FindStringSubmatch(first); m != nil {
			n, _ := strconv.Atoi(m[1])
			return &ConfigError{File: path, Line: n, Msg: friendlyYAML(m[2])}
		}
		return &ConfigError{File: path, Msg: first}
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &ConfigError{File: path, Line: n, Msg: "yaml syntax error: " + m[2]}
	}
	return &ConfigError{File: path, Msg: "yaml syntax error: " + msg}
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type config\.raw(\w+)`)

func friendlyYAML(msg string) string {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		where := "top level"
		if m[2] == "Link" {
			where = "a link"
		}
		return fmt.Sprintf("unknown key %q in %s", m[1], where)
	}
	return msg
}

func (c *Config) errf(line int, field, format string, args ...any) error {
	return &ConfigError{File: c.Path, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// LinkError is for callers (the planner, the appliers) that find a problem
// with link i's field only against the kernel.
func (c *Config) LinkError(i int, field, format string, args ...any) error {
	name := fmt.Sprintf("links[%d]", i)
	if field != "" {
		name += "." + field
	}
	return c.errf(c.lines.link(i, field), name, format, args...)
}

// FieldError is LinkError for a top-level field.
func (c *Config) FieldError(field, format string, args ...any) error {
	return c.errf(c.lines.top(field), field, format, args...)
}

func (c *Config) fill(raw *rawConfig) error {
	c.MarkMask = DefaultMarkMask
	if raw.MarkMask != nil {
		v := *raw.MarkMask
		if v <= 0 || v > 0xffffffff {
			return c.FieldError("mark_mask", "%#x is not a non-zero 32-bit mask", v)
		}
		c.MarkMask = uint32(v)
	}
	c.BalanceTable = DefaultBalanceTable
	if raw.BalanceTable != nil {
		if err := checkTable(*raw.BalanceTable); err != nil {
			return c.FieldError("balance_table", "%d %v", *raw.BalanceTable, err)
		}
		c.BalanceTable = int(*raw.BalanceTable)
	}
	c.PriorityBase = DefaultPriorityBase
	if raw.PriorityBase != nil {
		v := *raw.PriorityBase
		if v < 1 || v+RulePrioritySpan >= 32766 {
			return c.FieldError("priority_base", "%d is out of range (1..%d): flowpin's rules must sit between the local (0) and main (32766) rules", v, 32765-RulePrioritySpan)
		}
		c.PriorityBase = int(v)
	}
	if len(raw.Links) == 0 {
		return c.FieldError("links", "no links: at least one is needed")
	}
	if len(raw.Links) > MaxLinks {
		return c.FieldError("links", "%d links: at most %d are supported", len(raw.Links), MaxLinks)
	}
	values := maskValues(c.MarkMask)
	names := map[string]int{}
	ifaces := map[string]int{}
	tables := map[int]string{c.BalanceTable: "balance_table"}
	marks := map[uint32]int{}
	for i, rl := range raw.Links {
		l := Link{Name: rl.Name, Interface: rl.Interface, NAT: rl.NAT}
		if l.Name == "" {
			return c.LinkError(i, "name", "missing: every link needs a unique name")
		}
		if !validName(l.Name) {
			return c.LinkError(i, "name", "%q: use letters, digits, '-', '_' and '.' (at most 32)", l.Name)
		}
		if j, dup := names[l.Name]; dup {
			return c.LinkError(i, "name", "duplicate link name %q (also links[%d])", l.Name, j)
		}
		names[l.Name] = i
		if l.Interface == "" {
			return c.LinkError(i, "interface", "missing for link %q", l.Name)
		}
		if len(l.Interface) > 15 || strings.ContainsAny(l.Interface, " /\t\"") {
			return c.LinkError(i, "interface", "%q is not a valid interface name", l.Interface)
		}
		if j, dup := ifaces[l.Interface]; dup {
			return c.LinkError(i, "interface", "%q is already used by links[%d]", l.Interface, j)
		}
		ifaces[l.Interface] = i
		switch rl.Gateway {
		case "":
			return c.LinkError(i, "gateway", "missing for link %q (an address, or auto)", l.Name)
		case "auto":
			l.GatewayAuto = true
		default:
			gw, err := netip.ParseAddr(rl.Gateway)
			if err != nil || gw.Zone() != "" {
				return c.LinkError(i, "gateway", "%q is not an IP address (or auto)", rl.Gateway)
			}
			if !gw.Is4() {
				// The data model carries the family; IPv6 links come later.
				return c.LinkError(i, "gateway", "%s: only IPv4 gateways are supported so far", gw)
			}
			if gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback() {
				return c.LinkError(i, "gateway", "%s cannot be a next hop", gw)
			}
			l.Gateway = gw
		}
		if err := c.fillCheck(i, rl.Check, &l.Check); err != nil {
			return err
		}
		l.Weight = 1
		if rl.Weight != nil {
			if w := *rl.Weight; w < 1 || w > MaxWeight {
				return c.LinkError(i, "weight", "%d is out of range (1..%d)", w, MaxWeight)
			}
			l.Weight = int(*rl.Weight)
		}
		l.Table = c.BalanceTable + 1 + i
		if rl.Table != nil {
			if err := checkTable(*rl.Table); err != nil {
				return c.LinkError(i, "table", "%d %v", *rl.Table, err)
			}
			l.Table, l.TableSet = int(*rl.Table), true
		}
		// Only explicit values can collide: plan.Assign moves a default
		// out of their way.
		if other, dup := tables[l.Table]; dup && l.TableSet {
			return c.LinkError(i, "table", "table %d is already used by %s", l.Table, other)
		}
		if l.TableSet {
			tables[l.Table] = fmt.Sprintf("links[%d] (%s)", i, l.Name)
		}
		if rl.Mark != nil {
			m := *rl.Mark
			if m <= 0 || m > 0xffffffff || uint32(m)&^c.MarkMask != 0 {
				return c.LinkError(i, "mark", "%#x must be non-zero and inside mark_mask %#x", m, c.MarkMask)
			}
			l.Mark, l.MarkSet = uint32(m), true
		} else {
			if i >= len(values) {
				return c.LinkError(i, "mark", "mark_mask %#x has room for %d links only", c.MarkMask, len(values))
			}
			l.Mark = values[i]
		}
		if j, dup := marks[l.Mark]; dup && l.MarkSet {
			return c.LinkError(i, "mark", "%#x is already used by links[%d]", l.Mark, j)
		}
		if l.MarkSet {
			marks[l.Mark] = i
		}
		c.Links = append(c.Links, l)
	}
	return nil
}

func (c *Config) fillCheck(i int, raw *rawCheck, out *HealthCheck) error {
	*out = HealthCheck{Interval: DefaultInterval, Timeout: DefaultTimeout, Fall: DefaultFall, Rise: DefaultRise, Quorum: DefaultQuorum}
	if raw == nil {
		return nil
	}
	for j, s := range raw.Targets {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return c.LinkError(i, "check", "targets[%d]: %q is not an IPv4 address", j, s)
		}
		out.Targets = append(out.Targets, a)
	}
	if raw.Interval != nil {
		if v := *raw.Interval; v < 50*time.Millisecond || v > time.Minute {
			return c.LinkError(i, "check", "interval: %v is out of range (50ms..1m)", v)
		}
		out.Interval = *raw.Interval
	}
	if raw.Timeout != nil {
		if v := *raw.Timeout; v < 10*time.Millisecond || v > 30*time.Second {
			return c.LinkError(i, "check", "timeout: %v is out of range (10ms..30s)", v)
		}
		out.Timeout = *raw.Timeout
	}
	for _, f := range []struct {
		name string
		raw  *int64
		out  *int
	}{{"fall", raw.Fall, &out.Fall}, {"rise", raw.Rise, &out.Rise}, {"quorum", raw.Quorum, &out.Quorum}} {
		if f.raw == nil {
			continue
		}
		if *f.raw < 1 || *f.raw > 100 {
			return c.LinkError(i, "check", "%s: %d is out of range (1..100)", f.name, *f.raw)
		}
		*f.out = int(*f.raw)
	}
	if n := max(len(out.Targets), 1); out.Quorum > n {
		return c.LinkError(i, "check", "quorum: %d is more than the %d targets", out.Quorum, n)
	}
	return nil
}

func checkTable(v int64) error {
	switch {
	case v < 1 || v > 0xffffffff:
		return errors.New("is not a routing table id (1..4294967295)")
	case v >= 252 && v <= 255:
		return errors.New("is reserved by the kernel (default, main, local)")
	}
	return nil
}

// maskValues lists the first link marks under mask: 1, 2, 3... shifted to
// the mask's lowest bit, skipping values with bits outside the mask.
func maskValues(mask uint32) []uint32 {
	shift := 0
	for mask>>shift&1 == 0 {
		shift++
	}
	var out []uint32
	for n := uint64(1); len(out) < MaxLinks && n<<shift <= 0xffffffff; n++ {
		v := uint32(n << shift)
		if v&^mask == 0 {
			out = append(out, v)
		} else if v > mask {
			break
		}
	}
	return out
}

func validName(s string) bool {
	if len(s) > 32 {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// lineIndex finds the line of a field in the parsed YAML document.
type lineIndex struct{ root *yaml.Node }

func (x lineIndex) doc() *yaml.Node {
	if x.root == nil || len(x.root.Content) == 0 {
		return nil
	}
	return x.root.Content[0]
}

func mapValue(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func (x lineIndex) top(field string) int {
	d := x.doc()
	if d == nil {
		return 0
	}
	if k, _ := mapValue(d, field); k != nil {
		return k.Line
	}
	return d.Line
}

func (x lineIndex) link(i int, field string) int {
	_, links := mapValue(x.doc(), "links")
	if links == nil || links.Kind != yaml.SequenceNode || i >= len(links.Content) {
		return x.top("links")
	}
	item := links.Content[i]
	if field == "" {
		return item.Line
	}
	if _, v := mapValue(item, field); v != nil {
		return v.Line
	}
	return item.Line
}
