package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Set is a named set of addresses that a rule's src_set or dst_set
// matches: filled from domain names by a resolver (Domains), or from
// files and inline addresses by flowpin (Files, Addresses). A set is one
// or the other: flowpin rewrites a file set's elements whenever the file
// changes, which would drop what a resolver added.
type Set struct {
	Name string
	// Domains: the names and all their subdomains, lower case, without a
	// trailing dot.
	Domains []string
	// Resolve: the daemon resolves Domains itself (no dnsmasq).
	Resolve bool
	// Timeout is how long a resolved address stays in a domain set.
	Timeout time.Duration
	// Files are absolute paths, read by Load (ReadSetFiles).
	Files     []string
	Addresses []netip.Prefix
	// Elems are Addresses and then the files' contents, as written (the
	// planner merges them); nil until ReadSetFiles, and for a domain set.
	Elems []netip.Prefix
	// Stamps say what each of Files was when ReadSetFiles read it
	// (FileStamp), so the daemon's watcher, which starts after the read,
	// sees a change made in between.
	Stamps []string
}

// FileStamp names a file's version: its inode and device, size, and
// modification and change times. A file replaced by rename has another
// inode; one written in place another ctime, which no tool can set back.
func FileStamp(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
	}
	return fmt.Sprintf("%d/%d/%d/%d.%d/%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

// Domain says whether a resolver fills the set.
func (s Set) Domain() bool { return len(s.Domains) > 0 }

// Set limits.
const (
	MaxSets = 64
	// MaxSetName keeps the nft set name (set4_NAME) short and the
	// dnsmasq line readable.
	MaxSetName = 24
	// MinSetTimeout: a resolved address stays at least an hour. dnsmasq
	// adds an address only when an answer comes from upstream, not from
	// its cache; an element that expired while the cached answer lives
	// on is gone until the cache expires, and those flows take the wrong
	// link. An hour outlives the TTLs of nearly every name.
	MinSetTimeout = time.Hour
	MaxSetTimeout = 7 * 24 * time.Hour
	// MaxSetLines bounds what the files of all sets together may hold: a
	// country's list is tens of thousands of lines. The whole change is
	// one batch, built in memory so that it stays atomic: 250k /24s took
	// 1.8 s and 433 MiB to apply on a 2-core machine, 2M ranges 54 s and
	// 2.6 GiB. A bound per set let MaxSets times that pass.
	MaxSetLines = 250_000
)

type rawSet struct {
	Name      string         `yaml:"name"`
	Domains   []string       `yaml:"domains" max:"1024"`
	Resolve   bool           `yaml:"resolve"`
	Timeout   *time.Duration `yaml:"timeout"`
	Files     []string       `yaml:"files" max:"64"`
	Addresses []string       `yaml:"addresses" max:"4096"`
}

// SetByName returns the index of the named set in c.Sets.
func (c *Config) SetByName(name string) (int, bool) {
	i := slices.IndexFunc(c.Sets, func(s Set) bool { return s.Name == name })
	return i, i >= 0
}

// validSetName: letters, digits, '_' and '-'. The name is part of nft
// set names and of dnsmasq's nftset= syntax, where '#', ',' and '/' are
// separators.
func validSetName(s string) bool {
	if s == "" || len(s) > MaxSetName {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return false
		}
	}
	return true
}

func (c *Config) fillSets(raw *rawConfig) error {
	domains := map[string]string{}
	for k := range raw.Sets {
		s, err := c.fillSet(k, &raw.Sets[k], domains)
		if err != nil {
			return err
		}
		c.Sets = append(c.Sets, s)
	}
	return nil
}

func (c *Config) fillSet(k int, rs *rawSet, domains map[string]string) (Set, error) {
	at := func(field string) string { return fmt.Sprintf("sets[%d].%s", k, field) }
	s := Set{Name: rs.Name, Resolve: rs.Resolve}
	switch {
	case s.Name == "":
		return s, c.FieldError(at("name"), "missing: every set needs a unique name (rules name it in src_set or dst_set)")
	case !validSetName(s.Name):
		return s, c.FieldError(at("name"), "%s: use letters, digits, '-' and '_' (at most %d)", quote(s.Name), MaxSetName)
	}
	if j, dup := c.SetByName(s.Name); dup {
		return s, c.FieldError(at("name"), "duplicate set name %s (also sets[%d])", quote(s.Name), j)
	}
	static := len(rs.Files) > 0 || len(rs.Addresses) > 0
	switch {
	case len(rs.Domains) == 0 && !static:
		return s, c.FieldError(fmt.Sprintf("sets[%d]", k), "set %s is empty: give it domains, or files and addresses", quote(s.Name))
	case len(rs.Domains) > 0 && static:
		return s, c.FieldError(at("domains"), "set %s has both domains and files or addresses: a resolver fills a domain set, flowpin a file set, so make two sets and two rules", quote(s.Name))
	case rs.Resolve && !static && len(rs.Domains) == 0, rs.Resolve && static:
		return s, c.FieldError(at("resolve"), "only a set with domains can be resolved")
	case rs.Timeout != nil && static:
		return s, c.FieldError(at("timeout"), "only a domain set's elements expire: flowpin keeps a file set's in step with the file")
	}
	for j, d := range rs.Domains {
		f := fmt.Sprintf("%s[%d]", at("domains"), j)
		name, err := NormalizeDomain(d)
		if err != nil {
			return s, c.FieldError(f, "%s %v", quote(d), err)
		}
		if prev, dup := domains[name]; dup {
			return s, c.FieldError(f, "%s is already in %s: a resolver adds a name's addresses to one set", quote(name), prev)
		}
		domains[name] = fmt.Sprintf("set %s", quote(s.Name))
		s.Domains = append(s.Domains, name)
	}
	if s.Domain() {
		s.Timeout = MinSetTimeout
		if rs.Timeout != nil {
			if v := *rs.Timeout; v <= 0 || v > MaxSetTimeout {
				return s, c.FieldError(at("timeout"), "%v is out of range (up to %v)", v, MaxSetTimeout)
			}
			if v := *rs.Timeout; v%time.Second != 0 {
				// The kernel holds a set's timeout in jiffies and reads it
				// back rounded to them: a set whose timeout never reads
				// back as written is made anew, elements carried over, on
				// every apply and every drift check.
				return s, c.FieldError(at("timeout"), "%v is not a whole number of seconds", v)
			}
			s.Timeout = max(*rs.Timeout, MinSetTimeout)
		}
	}
	dir := filepath.Dir(c.Path)
	for j, f := range rs.Files {
		if strings.TrimSpace(f) == "" {
			return s, c.FieldError(fmt.Sprintf("%s[%d]", at("files"), j), "empty file name")
		}
		if !filepath.IsAbs(f) {
			// Relative to the config, not to wherever the daemon runs.
			f = filepath.Join(dir, f)
		}
		s.Files = append(s.Files, filepath.Clean(f))
	}
	var err error
	if s.Addresses, err = c.prefixes(at("addresses"), rs.Addresses); err != nil {
		return s, err
	}
	return s, nil
}

// NormalizeDomain lower-cases a domain name and drops its trailing dot;
// it refuses what is not a host name. A wildcard is refused: a name
// covers its subdomains already.
func NormalizeDomain(d string) (string, error) {
	name := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	switch {
	case strings.HasPrefix(name, "*."):
		return "", fmt.Errorf("is a wildcard: write %s, which covers all its subdomains", quote(name[2:]))
	case name == "":
		return "", errors.New("is not a domain name")
	case len(name) > 253:
		return "", errors.New("is longer than 253 characters")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		// Its digits pass for labels, but no resolver answers for it:
		// the set would stay empty without a word.
		return "", errors.New("is an address, not a domain name: list addresses in a set of their own (addresses:)")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", errors.New("is not a domain name (labels of 1 to 63 letters, digits and '-', separated by dots)")
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z')) {
				return "", fmt.Errorf("is not a domain name: %q is not allowed (write an internationalized name in its xn-- form)", r)
			}
		}
	}
	if publicSuffix(name) {
		return "", fmt.Errorf("is a public suffix (like com, co.uk or github.io): anyone may register a name under it, so any client of the resolver could put any address into the set by looking up a name it controls; list the domain itself (example%s)", "."+name)
	}
	return name, nil
}

// homeArpa is the special-use domain for home networks (RFC 8375): on
// the list, but never delegated, so only the local resolver answers for
// names under it, as for lan.
const homeArpa = "home.arpa"

// publicSuffix says whether name is on the Public Suffix List: a TLD, a
// registry's zone (co.uk) or a hosting provider's (github.io). A single
// label the list does not know (lan, home, internal) is not: the list's
// default rule makes any unknown TLD a suffix, but no one outside can
// register under a name that is not delegated, so it is a local name the
// operator's own resolver answers for.
func publicSuffix(name string) bool {
	ps, icann := publicsuffix.PublicSuffix(name)
	if ps != name || name == homeArpa {
		return false
	}
	// icann is false both for the private part of the list (github.io,
	// always more than one label) and for the default rule.
	return icann || strings.Contains(name, ".")
}

// checkSetRef says why name is not a set a rule can match.
func (c *Config) checkSetRef(field, name string) error {
	if _, ok := c.SetByName(name); ok {
		return nil
	}
	known := map[string]fieldInfo{}
	for _, s := range c.Sets {
		known[s.Name] = fieldInfo{}
	}
	msg := fmt.Sprintf("%s is not a set", quote(name))
	if near := nearest(name, known); near != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", near)
	}
	return c.FieldError(field, "%s", msg)
}

// ReadSetFiles fills each file set's Elems from its addresses and files.
// An unreadable file or a bad line is an error naming the file, the line
// and the value; c is then unchanged.
func (c *Config) ReadSetFiles() error {
	elems := make([][]netip.Prefix, len(c.Sets))
	stamps := make([][]string, len(c.Sets))
	lines := 0
	for k, s := range c.Sets {
		if s.Domain() {
			continue
		}
		ps := slices.Clone(s.Addresses)
		add := func(p netip.Prefix) { ps = append(ps, p) }
		for j, f := range s.Files {
			n, stamp, err := readSetFile(f, add, MaxSetLines-lines)
			if err != nil {
				return c.setFileError(k, j, err)
			}
			lines += n
			stamps[k] = append(stamps[k], stamp)
		}
		if ps == nil {
			ps = []netip.Prefix{}
		}
		elems[k] = ps
	}
	for k := range c.Sets {
		c.Sets[k].Elems = elems[k]
		c.Sets[k].Stamps = stamps[k]
	}
	return nil
}

func (c *Config) setFileError(k, j int, err error) error {
	field := fmt.Sprintf("sets[%d].files[%d]", k, j)
	var le *SetFileError
	if errors.As(err, &le) {
		return &ConfigError{File: le.File, Line: le.Line, Field: field, Msg: le.Msg}
	}
	return c.FieldError(field, "%v", err)
}

// SetFileError is a bad line of a set file.
type SetFileError struct {
	File string
	Line int
	Msg  string
	// quoted: Msg shows the line.
	quoted bool
}

func (e *SetFileError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

func readSetFile(path string, add func(netip.Prefix), maxLines int) (int, string, error) {
	f, st, err := OpenRegular(path)
	if err != nil {
		var nr *NotRegularError
		if errors.As(err, &nr) {
			return 0, "", fmt.Errorf("set file %w", err)
		}
		return 0, "", fmt.Errorf("set file: %w", err)
	}
	defer f.Close()
	n, err := ParseSetFile(path, f, add, maxLines)
	var le *SetFileError
	if st.Mode().Perm()&0o004 == 0 && errors.As(err, &le) && le.quoted {
		// Root reads the file; the error reaches the log and whoever may
		// reload the daemon. A file not everyone may read (a symlink to
		// /etc/shadow where a list was expected) keeps its lines.
		le.Msg = "is not an address or a CIDR, or a comment (the line is not shown: the file is not readable by all)"
	}
	return n, FileStamp(st), err
}

// MaxSetFileBytes bounds what is read of one set file, comments and blank
// lines included: a file that grows for ever (a log written to the wrong
// path) must not hold apply or a reload. The largest list there is, the
// whole routing table with comments, is a tenth of it.
const MaxSetFileBytes = 256 << 20

// maxSetLine: no address or CIDR with a comment is longer; a longer line
// is not a list of addresses (a binary file, or the wrong file).
const maxSetLine = 4096

// ParseSetFile passes the addresses and CIDRs of r, one a line, to add. A
// '#' starts a comment; blank lines are skipped. It reads at most
// maxLines lines that hold an address. It returns how many it read.
func ParseSetFile(name string, r io.Reader, add func(netip.Prefix), maxLines int) (int, error) {
	lr := &io.LimitedReader{R: r, N: MaxSetFileBytes + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 512), maxSetLine)
	n, count := 0, 0
	for sc.Scan() {
		if lr.N <= 0 {
			return count, &SetFileError{File: name, Line: n + 1, Msg: fmt.Sprintf("the file is larger than %d MiB: not a list of addresses", MaxSetFileBytes>>20)}
		}
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p, msg := parseSetEntry(line)
		if msg != "" {
			return count, &SetFileError{File: name, Line: n, Msg: msg, quoted: true}
		}
		if count++; count > maxLines {
			return count, &SetFileError{File: name, Line: n, Msg: fmt.Sprintf("more than %d addresses in the sets' files", MaxSetLines)}
		}
		add(p)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return count, &SetFileError{File: name, Line: n + 1, Msg: fmt.Sprintf("a line longer than %d bytes: not a list of addresses", maxSetLine)}
		}
		return count, fmt.Errorf("read %s: %w", name, err)
	}
	return count, nil
}

func parseSetEntry(s string) (netip.Prefix, string) {
	bad := func(why string) (netip.Prefix, string) {
		return netip.Prefix{}, fmt.Sprintf("%s %s", quote(s), why)
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return bad("is not an address or a CIDR (like 192.0.2.0/24 or 2001:db8::/32)")
		}
		if m := p.Masked(); m != p {
			return bad(fmt.Sprintf("has bits set past the prefix length: did you mean %s?", m))
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return bad("is not an address or a CIDR (like 192.0.2.0/24 or 2001:db8::/32)")
		}
		if a.Zone() != "" {
			return bad("carries a zone, which a set cannot hold")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return bad("is an IPv4-mapped IPv6 address, which no packet carries: write the IPv4 address")
	}
	return p, ""
}
