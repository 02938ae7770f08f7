package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const setsLinks = `links:
  - {name: fiber, interface: wan1, gateway: 192.0.2.1, nat: true}
  - {name: cable, interface: wan2, gateway: 198.51.100.1, nat: true}
`

func TestSets(t *testing.T) {
	c, err := Parse("/etc/flowpin/f.yaml", []byte(setsLinks+`sets:
  - name: video
    domains: [Video.Example., cdn.example]
    timeout: 3h
  - name: bank
    domains: [bank.example]
    resolve: true
    timeout: 10m
  - name: office
    files: [office.txt, /srv/lists/more.txt]
    addresses: [192.0.2.0/24, 2001:db8::/48]
rules:
  - {name: video-by-cable, dst_set: video, proto: tcp, dst_ports: [443], policy: cable}
  - {name: office-by-fiber, src_set: office, dst_set: bank, policy: fiber}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sets) != 3 {
		t.Fatalf("sets: %+v", c.Sets)
	}
	v, b, o := c.Sets[0], c.Sets[1], c.Sets[2]
	if strings.Join(v.Domains, ",") != "video.example,cdn.example" || v.Timeout != 3*time.Hour || v.Resolve || !v.Domain() {
		t.Errorf("video: %+v", v)
	}
	if b.Timeout != MinSetTimeout || !b.Resolve {
		t.Errorf("bank: a timeout below an hour is raised to it: %+v", b)
	}
	if strings.Join(o.Files, ",") != "/etc/flowpin/office.txt,/srv/lists/more.txt" || len(o.Addresses) != 2 || o.Domain() {
		t.Errorf("office: %+v", o)
	}
	if r := c.Rules[1]; r.SrcSet != "office" || r.DstSet != "bank" {
		t.Errorf("rule: %+v", r)
	}
}

func TestSetErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"no name", "sets: [{domains: [a.example]}]", "f.yaml:4: sets[0].name: missing"},
		{"odd name", "sets: [{name: 'v#4', domains: [a.example]}]", `sets[0].name: "v#4": use letters`},
		{"long name", "sets: [{name: abcdefghijklmnopqrstuvwxyz, domains: [a.example]}]", "sets[0].name"},
		{"dup", "sets: [{name: a, domains: [a.example]}, {name: a, domains: [b.example]}]", `sets[1].name: duplicate set name "a"`},
		{"empty", "sets: [{name: a}]", `sets[0]: set "a" is empty`},
		{"both", "sets: [{name: a, domains: [a.example], files: [x]}]", "sets[0].domains: set \"a\" has both"},
		{"resolve files", "sets: [{name: a, resolve: true, files: [x]}]", "sets[0].resolve: only a set with domains"},
		{"timeout files", "sets: [{name: a, timeout: 2h, files: [x]}]", "sets[0].timeout: only a domain set"},
		// The kernel keeps a set's timeout in jiffies and gives it back
		// rounded: a fraction of a second made every apply and every
		// drift check find the set changed and make it anew.
		// An address among the domains matches no name a resolver sees:
		// its set would stay empty without a word.
		{"address domain", "sets: [{name: a, domains: [192.0.2.10]}]", `sets[0].domains[0]: "192.0.2.10" is an address, not a domain name`},
		{"timeout fraction", "sets: [{name: a, timeout: 3600.003s, domains: [a.example]}]", "sets[0].timeout: 1h0m0.003s is not a whole number of seconds"},
		{"timeout big", "sets: [{name: a, timeout: 200h, domains: [a.example]}]", "sets[0].timeout: 200h0m0s is out of range"},
		{"wildcard", "sets: [{name: a, domains: ['*.a.example']}]", `sets[0].domains[0]: "*.a.example" is a wildcard: write "a.example"`},
		// A public suffix: anyone may register a name under it, and the
		// resolver adds that name's addresses, whatever they are.
		{"tld", "sets: [{name: a, domains: [Com.]}]", `f.yaml:4: sets[0].domains[0]: "Com." is a public suffix`},
		{"registry", "sets: [{name: a, domains: [video.example, co.uk]}]", `f.yaml:4: sets[0].domains[1]: "co.uk" is a public suffix (like com, co.uk or github.io): anyone may register a name under it, so any client of the resolver could put any address into the set by looking up a name it controls; list the domain itself (example.co.uk)`},
		{"private suffix", "sets: [{name: a, domains: [github.io]}]", `sets[0].domains[0]: "github.io" is a public suffix`},
		{"wildcard rule", "sets: [{name: a, domains: [anything.ck]}]", `sets[0].domains[0]: "anything.ck" is a public suffix`},
		{"arpa", "sets: [{name: a, domains: [in-addr.arpa]}]", `sets[0].domains[0]: "in-addr.arpa" is a public suffix`},
		{"bad domain", "sets: [{name: a, domains: ['a..example']}]", `sets[0].domains[0]: "a..example" is not a domain name`},
		{"space domain", "sets: [{name: a, domains: ['a b.example']}]", `sets[0].domains[0]: "a b.example" is not a domain name`},
		{"dup domain", "sets: [{name: a, domains: [a.example]}, {name: b, domains: [A.example.]}]", `sets[1].domains[0]: "a.example" is already in set "a"`},
		{"bad address", "sets: [{name: a, addresses: [192.0.2.0/33]}]", `sets[0].addresses[0]: "192.0.2.0/33" is not an address`},
		{"unknown set", "sets: [{name: video, domains: [a.example]}]\nrules: [{name: r, dst_set: vidoe, policy: fiber}]", `rules[0].dst_set: "vidoe" is not a set (did you mean "video"?)`},
		{"unknown src set", "rules: [{name: r, src_set: x, policy: fiber}]", `rules[0].src_set: "x" is not a set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(setsLinks+tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadSetFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "f.yaml")
	writeFile(t, cfg, setsLinks+"sets: [{name: office, files: [a.txt, b.txt], addresses: [10.0.0.0/25]}, {name: v, domains: [v.example]}]\n")
	// Overlapping and adjacent ranges of both families, comments, blank
	// lines, CRLF.
	writeFile(t, filepath.Join(dir, "a.txt"), "# office\n10.0.0.128/25\r\n\n  10.0.1.0/24 # second floor\n2001:db8::/33\n")
	writeFile(t, filepath.Join(dir, "b.txt"), "10.0.1.7\n2001:db8:8000::/33\n198.51.100.1\n")
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.Sets[0].Elems)
	if want := "[10.0.0.0/25 10.0.0.128/25 10.0.1.0/24 2001:db8::/33 10.0.1.7/32 2001:db8:8000::/33 198.51.100.1/32]"; got != want {
		t.Errorf("elements %s, want %s", got, want)
	}
	if c.Sets[1].Elems != nil {
		t.Errorf("a domain set has no file elements")
	}

	writeFile(t, filepath.Join(dir, "b.txt"), "10.0.1.7\n\n10.0.1.x # bad\n")
	_, err = Load(cfg)
	if want := filepath.Join(dir, "b.txt") + `:3: sets[0].files[1]: "10.0.1.x" is not an address or a CIDR`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("bad line: %v, want %s", err, want)
	}
	os.Remove(filepath.Join(dir, "b.txt"))
	_, err = Load(cfg)
	if err == nil || !strings.Contains(err.Error(), "sets[0].files[1]: set file: open "+filepath.Join(dir, "b.txt")+": no such file") {
		t.Errorf("missing file: %v", err)
	}
	writeFile(t, filepath.Join(dir, "b.txt"), "")
	if c, err = Load(cfg); err != nil || len(c.Sets[0].Elems) != 4 {
		t.Errorf("empty file: %v", err)
	}
}

func TestParseSetFileLines(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.1/8\n", `x:1: "10.0.0.1/8" has bits set past the prefix length: did you mean 10.0.0.0/8?`},
		{"::ffff:10.0.0.1\n", `x:1: "::ffff:10.0.0.1" is an IPv4-mapped`},
		{"fe80::1%eth0\n", `x:1: "fe80::1%eth0" carries a zone`},
		{"10.0.0.1 10.0.0.2\n", `x:1: "10.0.0.1 10.0.0.2" is not an address`},
		{"1.1.1.1\n" + strings.Repeat("x", 5000), "x:2: a line longer than 4096 bytes"},
		{"1.1.1.1\n1.1.1.2\n1.1.1.3\n", "x:3: more than"},
	} {
		_, err := ParseSetFile("x", strings.NewReader(tc.in), func(netip.Prefix) {}, 2)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %s", tc.in, err, tc.want)
		}
	}
}

// A bad line at the end of a large file is found and named, and nothing
// before it counts.
func TestSetFileLargeBadLast(t *testing.T) {
	var buf bytes.Buffer
	for i := range 100_000 {
		fmt.Fprintf(&buf, "10.%d.%d.0/24\n", i>>8&0xff, i&0xff)
	}
	buf.WriteString("10.300.0.0/16\n")
	n, err := ParseSetFile("big.txt", &buf, func(netip.Prefix) {}, MaxSetLines)
	if err == nil || !strings.HasPrefix(err.Error(), `big.txt:100001: "10.300.0.0/16"`) {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

func FuzzParseSetFile(f *testing.F) {
	f.Add([]byte("10.0.0.0/8\n# c\n2001:db8::1 # x\n\n"))
	f.Add([]byte("10.0.0.1/8\r\n::ffff:1.2.3.4\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []netip.Prefix
		n, err := ParseSetFile("f", bytes.NewReader(data), func(p netip.Prefix) { got = append(got, p) }, 1000)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error not one line naming the file: %q", err)
			}
			return
		}
		if n != len(got) || n > 1000 {
			t.Fatalf("%d lines, %d prefixes", n, len(got))
		}
		for _, p := range got {
			if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("bad element %v", p)
			}
		}
	})
}

// TestSetDomainsNotPublicSuffixes: names under a public suffix, and
// local names the Public Suffix List does not know, are domains a set
// may hold.
func TestSetDomainsNotPublicSuffixes(t *testing.T) {
	for _, d := range []string{"example.com", "video.example", "www.bbc.co.uk", "user.github.io", "lan", "home", "home.arpa", "nas.home.arpa", "internal", "local", "example"} {
		t.Run(d, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte(setsLinks+"sets: [{name: a, domains: ["+d+"]}]\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Sets[0].Domains; len(got) != 1 || got[0] != d {
				t.Errorf("domains %v", got)
			}
		})
	}
}
