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
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

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
	// DefaultPriorityBase: flowpin's ip rules live in [base, base+500].
	// Below 32766 (main) and above 0 (local); clear of the 0-999 range
	// that hand-written rules and most tools use.
	DefaultPriorityBase = 1000
	// MaxLinks is bounded by the rule layout: 99 priorities per block
	// (each block's first is the goto that skips it).
	MaxLinks = 99
	// RulePrioritySpan is how far above PriorityBase flowpin's ip rules
	// reach; the planner lays them out inside [base, base+span].
	RulePrioritySpan = 500
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
	// Policies: [0] is the implicit `default` (every link by tier), then
	// the config's policies in order, then a one-link policy for each
	// link a rule names.
	Policies []Policy
	// Unmatched is the index in Policies of the policy for flows no rule
	// matches: default_policy, or 0.
	Unmatched int
	Rules     []Rule
	// Sets are the named address sets rules match (src_set, dst_set).
	Sets []Set
	// Hooks run on link state changes.
	Hooks Hooks
	// HA: this router is one of a VRRP pair whose flows conntrackd
	// copies to the other (README, "HA pair"); see ha.go.
	HA bool

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
	// Gateway6 is the IPv6 next hop (global or link-local, on Interface);
	// with Gateway6Auto the planner takes it from the interface's IPv6
	// default route in main (router advertisements, DHCPv6). Neither: the
	// link carries no IPv6.
	Gateway6     netip.Addr
	Gateway6Auto bool
	Weight       int
	NAT          bool
	Table        int
	Mark         uint32
	// TableSet and MarkSet: the config gave them. Otherwise they are
	// defaults that Assign replaces with the link's recorded ones.
	TableSet, MarkSet bool
	// Tier places the link in the default policy: it takes new flows
	// only when no link of a lower tier is up. Default 1.
	Tier  int
	Check HealthCheck
	// OnDemand, if set, brings the link up only while its tier is the
	// active one.
	OnDemand *OnDemand
	// Quota, if set, caps the link's traffic per period (quota.go).
	Quota *Quota
	// DNS are the link's resolvers (dns.go): given, or with DNSAuto read
	// from the lease file DNSFrom (empty: the usual places).
	DNS     []netip.Addr
	DNSAuto bool
	DNSFrom string
	// Prefixes6 are the IPv6 prefixes this ISP routes or delegates to
	// the site (see prefixes6.go); with Prefixes6Auto the planner takes
	// them from the kernel's delegated-prefix routes.
	Prefixes6     []netip.Prefix
	Prefixes6Auto bool
	// NATSource, if valid, is the address new flows of its family leaving
	// by the link are SNATed to (a VIP, a fixed public address) instead of
	// masqueraded to the interface's own.
	NATSource netip.Addr
}

// HealthCheck is how the daemon probes a link. Defaults are for a failover in
// about a second that does not flap on one lost packet: a round every
// 300 ms, each waiting at most until the next is due, 3 bad rounds to go
// down (a silent failure costs new flows at most about 1.2 s: up to one
// round under way, then three), 3 good rounds to come back.
type HealthCheck struct {
	// Targets answer the probes. None: the gateway itself.
	Targets  []netip.Addr
	Interval time.Duration
	Timeout  time.Duration // at most Interval
	Fall     int           // consecutive bad rounds before down
	Rise     int           // consecutive good rounds before up
	Quorum   int           // targets that must answer for a round to be good

	// Link quality (each 0: off). A round whose rtt (the median over the
	// targets that answered) exceeds MaxRTT is bad; loss over the last
	// Window rounds above MaxLoss (0..1) takes the link down. A link that
	// went down stays down at least HoldDown.
	MaxRTT   time.Duration
	MaxLoss  float64
	Window   int
	HoldDown time.Duration

	// Method is how a target is probed. Port: tcp, http and dns; URL: the
	// http path; Query: the name a dns probe asks for.
	Method ProbeMethod
	Port   int
	URL    string
	Query  string
	// Command is the exec method's shell command (probe_exec.go).
	Command string
}

// Check defaults.
const (
	DefaultInterval = 300 * time.Millisecond
	// DefaultTimeout caps the default timeout, which is the interval when
	// that is shorter: a round ends before the next is due, so rounds
	// never overlap and a dead link's bad rounds come one per interval.
	DefaultTimeout = time.Second
	DefaultFall    = 3
	DefaultRise    = 3
	DefaultQuorum  = 1
	// DefaultWindow: rounds over which loss, rtt and jitter are measured;
	// 3 s of history at the default interval.
	DefaultWindow = 10
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

// Limits on the input. A config is a few KiB; anything much larger is the
// wrong file or a runaway generator, and is refused before it is parsed.
const (
	MaxFileSize = 1 << 20
	// MaxTargets per link: each is pinged every interval.
	MaxTargets = 16
	// MaxPolicies and MaxRules: the mark space and the ip rule layout
	// bound them further (see MaxRoutedMarks).
	MaxPolicies = 64
	MaxRules    = 1000
	// MaxTier is the highest tier a link can have.
	MaxTier = 16
)

// The raw structs are the file's schema: their yaml tags are the known
// keys of each section (see decode.go), `max` the most list entries.
type rawConfig struct {
	MarkMask     *int64    `yaml:"mark_mask"`
	BalanceTable *int64    `yaml:"balance_table"`
	PriorityBase *int64    `yaml:"priority_base"`
	Links        []rawLink `yaml:"links" max:"99"` // MaxLinks
	// DefaultPolicy names the policy of flows no rule matches.
	DefaultPolicy string      `yaml:"default_policy"`
	Policies      []rawPolicy `yaml:"policies" max:"64"` // MaxPolicies
	Rules         []rawRule   `yaml:"rules" max:"1000"`  // MaxRules
	Sets          []rawSet    `yaml:"sets" max:"64"`     // MaxSets
	Hooks         *rawHooks   `yaml:"hooks"`
	HA            bool        `yaml:"ha"`
}

type rawPolicy struct {
	Name       string     `yaml:"name"`
	Tiers      [][]string `yaml:"tiers"`
	LastResort string     `yaml:"last_resort"`
	Failback   string     `yaml:"failback"`
}

type rawRule struct {
	Name     string         `yaml:"name"`
	Proto    string         `yaml:"proto"`
	Src      []string       `yaml:"src" max:"256"`
	Dst      []string       `yaml:"dst" max:"256"`
	SrcPorts []string       `yaml:"src_ports" max:"64"`
	DstPorts []string       `yaml:"dst_ports" max:"64"`
	IIF      string         `yaml:"iif"`
	Policy   string         `yaml:"policy"`
	Sticky   *time.Duration `yaml:"sticky"`
	SrcSet   string         `yaml:"src_set"`
	DstSet   string         `yaml:"dst_set"`
}

type rawLink struct {
	Name      string       `yaml:"name"`
	Interface string       `yaml:"interface"`
	Gateway   string       `yaml:"gateway"`
	Gateway6  string       `yaml:"gateway6"`
	Weight    *int64       `yaml:"weight"`
	NAT       bool         `yaml:"nat"`
	Table     *int64       `yaml:"table"`
	Mark      *int64       `yaml:"mark"`
	Tier      *int64       `yaml:"tier"` // 1..MaxTier
	Check     *rawCheck    `yaml:"check"`
	OnDemand  *rawOnDemand `yaml:"on_demand"`
	// Quota, QuotaLastResort: lb/config/quota.go.
	Quota           *rawQuota    `yaml:"quota"`
	QuotaLastResort *bool        `yaml:"quota_last_resort"`
	DNS             *rawDNS      `yaml:"dns"`
	DNSFrom         *string      `yaml:"dns_from"`
	Prefixes6       rawPrefixes6 `yaml:"prefixes6"`
	NATSource       string       `yaml:"nat_source"`
}

type rawCheck struct {
	Targets  []string       `yaml:"targets" max:"16"` // MaxTargets
	Interval *time.Duration `yaml:"interval"`
	Timeout  *time.Duration `yaml:"timeout"`
	Fall     *int64         `yaml:"fall"`
	Rise     *int64         `yaml:"rise"`
	Quorum   *int64         `yaml:"quorum"`
	MaxRTT   *time.Duration `yaml:"max_rtt"`
	MaxLoss  *string        `yaml:"max_loss"`
	Window   *int64         `yaml:"window"`
	HoldDown *time.Duration `yaml:"hold_down"`
	Method   *string        `yaml:"method"`
	Port     *int64         `yaml:"port"`
	URL      *string        `yaml:"url"`
	Query    *string        `yaml:"query"`
	Command  *string        `yaml:"command"`
}

// Load reads and validates the file at path. It does not look at the
// kernel; Plan checks the config against the interfaces.
func Load(path string) (*Config, error) {
	c, err := LoadWithoutSetFiles(path)
	if err != nil {
		return nil, err
	}
	// The set files are read with the config, so apply, reload and the
	// file watcher see them the same way.
	if err := c.ReadSetFiles(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadWithoutSetFiles is Load but for the set files, which stay unread
// (Set.Elems nil): for what needs only the sets' names and domains.
func LoadWithoutSetFiles(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	// One byte more than allowed, so Parse sees that it is too large
	// without the whole of a huge file (or /dev/zero) being read.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse validates data as if read from path (used in messages).
func Parse(path string, data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, &ConfigError{File: path, Msg: fmt.Sprintf("larger than %d MiB, the most a config may be", MaxFileSize>>20)}
	}
	root, err := parseDocument(path, data)
	if err != nil {
		return nil, err
	}
	var raw rawConfig
	d := decoder{file: path}
	if err := d.decode("", root, reflect.ValueOf(&raw).Elem()); err != nil {
		return nil, err
	}
	c := &Config{Path: path, lines: lineIndex{root: root}}
	if err := c.fill(&raw); err != nil {
		return nil, err
	}
	return c, nil
}

// parseDocument parses data into a node tree and makes sure it is one
// YAML document: a second one would otherwise be silently ignored.
func parseDocument(path string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ConfigError{File: path, Msg: "empty config: no links"}
		}
		return nil, yamlError(path, err)
	}
	var second yaml.Node
	switch err := dec.Decode(&second); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(path, err)
	default:
		return nil, &ConfigError{File: path, Line: second.Line, Msg: "a second YAML document: a config is one document (remove the ---)"}
	}
	return &root, nil
}

var yamlLine = regexp.MustCompile(`line (\d+): (.*)`)

// yamlError turns yaml.v3's syntax errors into one line that starts with
// file:line.
func yamlError(path string, err error) error {
	msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "yaml: "), "\n", "; ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &ConfigError{File: path, Line: n, Msg: "yaml syntax error: " + m[2]}
	}
	return &ConfigError{File: path, Msg: "yaml syntax error: " + msg}
}

func (c *Config) errf(line int, field, format string, args ...any) error {
	return &ConfigError{File: c.Path, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// LinkError is for callers (the planner, the appliers) that find a problem
// with link i's field only against the kernel. field may be a path inside
// the link ("check.interval").
func (c *Config) LinkError(i int, field, format string, args ...any) error {
	name := fmt.Sprintf("links[%d]", i)
	if field != "" {
		name += "." + field
	}
	return c.FieldError(name, format, args...)
}

// FieldError is an error about the value at path: a top-level key
// ("balance_table") or a path into the file ("links[1].check.targets[0]").
// The line is the path's, or that of the nearest part of it in the file.
func (c *Config) FieldError(path, format string, args ...any) error {
	return c.errf(c.lines.line(path), path, format, args...)
}

// used is what the links so far have taken; each must be unique.
type used struct {
	names map[string]int
	// ifaces lists the links on each interface so far: links may share
	// one if their next hops differ.
	ifaces map[string][]int
	tables map[int64]string
	marks  map[uint32]int
}

func (c *Config) fill(raw *rawConfig) error {
	if err := c.fillTop(raw); err != nil {
		return err
	}
	u := used{
		names:  map[string]int{},
		ifaces: map[string][]int{},
		tables: map[int64]string{int64(c.BalanceTable): "balance_table"},
		marks:  map[uint32]int{},
	}
	for i := range raw.Links {
		l, err := c.fillLink(i, &raw.Links[i], &u)
		if err != nil {
			return err
		}
		c.Links = append(c.Links, l)
	}
	for i := range raw.Links {
		if err := c.fillTable(i, raw.Links[i].Table, &u); err != nil {
			return err
		}
	}
	if err := c.fillPrefixes6(raw.Links); err != nil {
		return err
	}
	values := MaskValues(c.MarkMask)
	for i := range raw.Links {
		if err := c.fillMark(i, raw.Links[i].Mark, values, &u); err != nil {
			return err
		}
	}
	if err := c.fillSets(raw); err != nil {
		return err
	}
	c.Policies = []Policy{{Name: DefaultPolicy, Tiers: DefaultTiers(c.Links), LastResort: Unreachable, Failback: Keep, Implicit: true}}
	if err := c.fillPolicies(raw); err != nil {
		return err
	}
	if err := c.fillOps(raw); err != nil {
		return err
	}
	return c.fillHA(raw)
}

// fillTop takes the top-level settings.
func (c *Config) fillTop(raw *rawConfig) error {
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
		if err := CheckTableID(*raw.BalanceTable); err != nil {
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
	return nil
}

// fillLink takes one link's own settings; its table and mark depend on
// the others and come after.
func (c *Config) fillLink(i int, rl *rawLink, u *used) (Link, error) {
	l := Link{Name: rl.Name, Interface: rl.Interface, NAT: rl.NAT}
	if l.Name == "" {
		return l, c.LinkError(i, "name", "missing: every link needs a unique name")
	}
	if !validName(l.Name) {
		return l, c.LinkError(i, "name", "%s: use letters, digits, '-', '_' and '.' (at most 32)", quote(l.Name))
	}
	if j, dup := u.names[l.Name]; dup {
		return l, c.LinkError(i, "name", "duplicate link name %s (also links[%d])", quote(l.Name), j)
	}
	u.names[l.Name] = i
	if l.Interface == "" {
		return l, c.LinkError(i, "interface", "missing for link %s", quote(l.Name))
	}
	if !validInterface(l.Interface) {
		return l, c.LinkError(i, "interface", "%s is not a valid interface name", quote(l.Interface))
	}
	if err := c.fillGateway(i, rl, &l); err != nil {
		return l, err
	}
	if err := c.checkShared(i, l, u); err != nil {
		return l, err
	}
	u.ifaces[l.Interface] = append(u.ifaces[l.Interface], i)
	if err := c.fillCheck(i, rl.Check, &l.Check); err != nil {
		return l, err
	}
	l.Tier = 1
	if rl.Tier != nil {
		if t := *rl.Tier; t < 1 || t > MaxTier {
			return l, c.LinkError(i, "tier", "%d is out of range (1..%d)", t, MaxTier)
		}
		l.Tier = int(*rl.Tier)
	}
	l.Weight = 1
	if rl.Weight != nil {
		if w := *rl.Weight; w < 1 || w > MaxWeight {
			return l, c.LinkError(i, "weight", "%d is out of range (1..%d)", w, MaxWeight)
		}
		l.Weight = int(*rl.Weight)
	}
	if err := c.fillQuota(i, rl, &l); err != nil {
		return l, err
	}
	if err := c.fillDNS(i, rl, &l); err != nil {
		return l, err
	}
	return l, nil
}

// fillGateway takes the IPv4 and IPv6 next hops: an address, or auto (the
// planner then takes the next hop of the interface's own default route of
// that family). A link needs at least one.
func (c *Config) fillGateway(i int, rl *rawLink, l *Link) error {
	if rl.Gateway == "" && rl.Gateway6 == "" {
		return c.LinkError(i, "gateway", "missing for link %s: give gateway (IPv4: an address, or auto), gateway6 (IPv6: an address, or auto), or both", quote(l.Name))
	}
	switch rl.Gateway {
	case "":
	case "auto":
		l.GatewayAuto = true
	default:
		gw, err := netip.ParseAddr(rl.Gateway)
		if err != nil || gw.Zone() != "" {
			return c.LinkError(i, "gateway", "%s is not an IP address (or auto)", quote(rl.Gateway))
		}
		if !gw.Is4() {
			return c.LinkError(i, "gateway", "%s is an IPv6 address: IPv6 next hops go in gateway6", gw)
		}
		if gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback() || gw == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return c.LinkError(i, "gateway", "%s cannot be a next hop", gw)
		}
		l.Gateway = gw
	}
	switch rl.Gateway6 {
	case "":
	case "auto":
		l.Gateway6Auto = true
	default:
		gw, err := netip.ParseAddr(rl.Gateway6)
		if err != nil {
			return c.LinkError(i, "gateway6", "%s is not an IP address (or auto)", quote(rl.Gateway6))
		}
		if gw.Is4() || gw.Is4In6() {
			return c.LinkError(i, "gateway6", "%s is an IPv4 address: IPv4 next hops go in gateway", gw)
		}
		if z := gw.Zone(); z != "" && z != l.Interface {
			// A link-local next hop is only meaningful on one interface:
			// the link's own.
			return c.LinkError(i, "gateway6", "%s names interface %s, but the link is on %s (write it without %%%s, or %s%%%s)", quote(rl.Gateway6), z, l.Interface, z, gw.WithZone(""), l.Interface)
		}
		gw = gw.WithZone("")
		if gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback() {
			return c.LinkError(i, "gateway6", "%s cannot be a next hop", gw)
		}
		l.Gateway6 = gw
	}
	return nil
}

// checkShared: links on one interface (two modems on one switch behind
// wan0) are told apart only by their next hops, so each needs its own,
// given as an address: auto would take the same default route for both.
func (c *Config) checkShared(i int, l Link, u *used) error {
	others := u.ifaces[l.Interface]
	if len(others) == 0 {
		return nil
	}
	const why = "auto on interface %s, which links[%d] also uses: links on one interface are told apart by their next hops, so give each its own address"
	if l.GatewayAuto {
		return c.LinkError(i, "gateway", why, l.Interface, others[0])
	}
	if l.Gateway6Auto {
		return c.LinkError(i, "gateway6", why, l.Interface, others[0])
	}
	for _, j := range others {
		o := c.Links[j]
		if o.GatewayAuto {
			return c.LinkError(j, "gateway", why, l.Interface, i)
		}
		if o.Gateway6Auto {
			return c.LinkError(j, "gateway6", why, l.Interface, i)
		}
		if l.Gateway.IsValid() && l.Gateway == o.Gateway {
			return c.LinkError(i, "gateway", "%s on interface %s is already links[%d]'s: links on one interface need different next hops", l.Gateway, l.Interface, j)
		}
		if l.Gateway6.IsValid() && l.Gateway6 == o.Gateway6 {
			return c.LinkError(i, "gateway6", "%s on interface %s is already links[%d]'s: links on one interface need different next hops", l.Gateway6, l.Interface, j)
		}
	}
	return nil
}

// Shared says whether another link uses the link's interface.
func (c *Config) Shared(i int) bool {
	for j, o := range c.Links {
		if j != i && o.Interface == c.Links[i].Interface {
			return true
		}
	}
	return false
}

// HasV4 says whether the link carries IPv4 (it has gateway).
func (l Link) HasV4() bool { return l.Gateway.IsValid() || l.GatewayAuto }

// HasV6 says whether the link carries IPv6 (it has gateway6).
func (l Link) HasV6() bool { return l.Gateway6.IsValid() || l.Gateway6Auto }

// fillTable gives link i its table: the one it names, or the next after
// balance_table.
func (c *Config) fillTable(i int, raw *int64, u *used) error {
	l := &c.Links[i]
	if raw != nil {
		if err := CheckTableID(*raw); err != nil {
			return c.LinkError(i, "table", "%d %v", *raw, err)
		}
		l.Table, l.TableSet = int(*raw), true
	} else {
		id := int64(c.BalanceTable) + 1 + int64(i)
		if err := CheckTableID(id); err != nil {
			return c.FieldError("balance_table", "%d gives links[%d] table %d, which %v: choose another balance_table, or a table for the link", c.BalanceTable, i, id, err)
		}
		l.Table = int(id)
	}
	// Only explicit values can collide: Assign moves a default out
	// of their way.
	if !l.TableSet {
		return nil
	}
	if other, dup := u.tables[int64(l.Table)]; dup {
		return c.LinkError(i, "table", "table %d is already used by %s", l.Table, other)
	}
	u.tables[int64(l.Table)] = fmt.Sprintf("links[%d] (%s)", i, l.Name)
	return nil
}

// fillMark gives link i its mark: the one it names, or the i-th value
// under the mask.
func (c *Config) fillMark(i int, raw *int64, values []uint32, u *used) error {
	l := &c.Links[i]
	if raw != nil {
		if err := CheckMark(*raw, c.MarkMask); err != nil {
			return c.LinkError(i, "mark", "%#x %v", *raw, err)
		}
		l.Mark, l.MarkSet = uint32(*raw), true
	} else {
		if i >= len(values) {
			return c.LinkError(i, "mark", "mark_mask %#x has room for %d links only", c.MarkMask, len(values))
		}
		l.Mark = values[i]
	}
	if !l.MarkSet {
		return nil
	}
	if j, dup := u.marks[l.Mark]; dup {
		return c.LinkError(i, "mark", "%#x is already used by links[%d]", l.Mark, j)
	}
	u.marks[l.Mark] = i
	return nil
}

func (c *Config) fillCheck(i int, raw *rawCheck, out *HealthCheck) error {
	*out = HealthCheck{Interval: DefaultInterval, Timeout: DefaultTimeout, Fall: DefaultFall, Rise: DefaultRise, Quorum: DefaultQuorum, Window: DefaultWindow, Method: ProbeICMP}
	if raw == nil {
		out.Timeout = min(DefaultTimeout, out.Interval)
		return nil
	}
	for j, s := range raw.Targets {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return c.LinkError(i, fmt.Sprintf("check.targets[%d]", j), "%s is not an IP address", quote(s))
		}
		out.Targets = append(out.Targets, a)
	}
	if raw.Interval != nil {
		if v := *raw.Interval; v < 50*time.Millisecond || v > time.Minute {
			return c.LinkError(i, "check.interval", "%v is out of range (50ms..1m)", v)
		}
		out.Interval = *raw.Interval
	}
	out.Timeout = min(DefaultTimeout, out.Interval)
	if raw.Timeout != nil {
		if v := *raw.Timeout; v < 10*time.Millisecond || v > 30*time.Second {
			return c.LinkError(i, "check.timeout", "%v is out of range (10ms..30s)", v)
		}
		out.Timeout = *raw.Timeout
		if out.Timeout > out.Interval {
			return c.LinkError(i, "check.timeout", "%v is longer than the interval (%v): rounds would overlap; give at most %v, or a longer interval", out.Timeout, out.Interval, out.Interval)
		}
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
			return c.LinkError(i, "check."+f.name, "%d is out of range (1..100)", *f.raw)
		}
		*f.out = int(*f.raw)
	}
	if n := max(len(out.Targets), 1); out.Quorum > n {
		return c.LinkError(i, "check.quorum", "%d is more than the %d targets", out.Quorum, n)
	}
	if err := c.fillQuality(i, raw, out); err != nil {
		return err
	}
	return c.fillMethod(i, raw, out)
}

// CheckTableID says why id cannot be one of flowpin's routing tables, or
// returns nil. The error reads after the number: "300 is ...".
func CheckTableID(id int64) error {
	switch {
	case id == 0 || id >= 252 && id <= 255:
		// rtnetlink.h: RT_TABLE_UNSPEC 0, COMPAT 252, DEFAULT 253,
		// MAIN 254, LOCAL 255.
		return errors.New("is reserved by the kernel (0 unspec, 252 compat, 253 default, 254 main, 255 local)")
	case id < 1 || id > 0xffffffff:
		return errors.New("is not a routing table id (1..4294967295)")
	}
	return nil
}

// CheckMark says why m cannot be a link's mark under mask, or returns nil.
// The error reads after the number: "0x1 must ...".
func CheckMark(m int64, mask uint32) error {
	if m <= 0 || m > 0xffffffff || uint32(m)&^mask != 0 {
		return fmt.Errorf("must be non-zero and inside mark_mask %#x", mask)
	}
	return nil
}

// MaskValues lists the first link marks under mask: 1, 2, 3... shifted to
// the mask's lowest bit, skipping values with bits outside the mask. The
// config gives links these by position; Assign hands out the same
// values, in the same order.
func MaskValues(mask uint32) []uint32 { return maskValues(mask, MaxLinks) }

// MaxMaskValues caps AllMaskValues: more than every link, policy and
// sticky rule a config can have (100 + 64 + 1000 + 1).
const MaxMaskValues = 4096

// AllMaskValues lists the values under mask as MaskValues does, up to
// MaxMaskValues of them: the links, the policies, the sticky rules and
// the bypass of rules with policy main all take one.
func AllMaskValues(mask uint32) []uint32 { return maskValues(mask, MaxMaskValues) }

func maskValues(mask uint32, limit int) []uint32 {
	if mask == 0 {
		return nil
	}
	shift := 0
	for mask>>shift&1 == 0 {
		shift++
	}
	var out []uint32
	for n := uint64(1); len(out) < limit && n<<shift <= 0xffffffff; n++ {
		v := uint32(n << shift)
		if v&^mask == 0 {
			out = append(out, v)
		} else if v > mask {
			break
		}
	}
	return out
}

// validInterface is the kernel's dev_valid_name (net/core/dev.c): 1 to 15
// bytes, not "." or "..", no '/', ':' or white space. flowpin also refuses
// what nft's language cannot write as it is, since `plan` prints the
// names in nft rules for an operator to run: '"' (a string cannot hold
// one), '\' (flowpin's nft text escapes it, nft does not unescape it), '*'
// (a trailing one is a wildcard) and characters that do not print.
func validInterface(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || r == '"' || r == '\\' || r == '*' || r <= ' ' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
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

// lineIndex finds the line of a path (links[1].check.interval) in the
// parsed YAML document.
type lineIndex struct{ root *yaml.Node }

var pathPart = regexp.MustCompile(`^([^.\[]*)((?:\[\d+\])*)`)

func (x lineIndex) line(path string) int {
	if x.root == nil {
		return 0
	}
	n := resolve(x.root)
	line := n.Line
	for part := range strings.SplitSeq(path, ".") {
		m := pathPart.FindStringSubmatch(part)
		if m == nil {
			return line
		}
		if m[1] != "" {
			k, v := mapValue(n, m[1])
			if k == nil {
				return line
			}
			n, line = resolve(v), k.Line
		}
		for idx := range strings.SplitSeq(strings.Trim(m[2], "[]"), "][") {
			if idx == "" {
				continue
			}
			i, _ := strconv.Atoi(idx)
			if n.Kind != yaml.SequenceNode || i >= len(n.Content) {
				return line
			}
			n = resolve(n.Content[i])
			line = n.Line
		}
	}
	return line
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
