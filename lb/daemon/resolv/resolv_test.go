package resolv

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
)

func addrs4(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestParseLease(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       []netip.Addr
	}{
		{"resolv.conf (pppd usepeerdns)", "nameserver 192.0.2.53\nnameserver 192.0.2.54\n", addrs4("192.0.2.53", "192.0.2.54")},
		{"resolv.conf with comments and options", "# ppp\nsearch isp.example\nnameserver 2001:db8::53\noptions edns0\n", addrs4("2001:db8::53")},
		{"dhclient: the last lease wins", `lease {
  interface "wan0";
  fixed-address 198.51.100.7;
  option domain-name-servers 198.51.100.1, 198.51.100.2;
}
lease {
  interface "wan0";
  fixed-address 198.51.100.7;
  option domain-name-servers 198.51.100.3;
}
`, addrs4("198.51.100.3")},
		{"networkd", "# This is private data. Do not parse.\nADDRESS=10.0.0.5\nDNS=10.0.0.1 10.0.0.2\nNTP=10.0.0.1\n", addrs4("10.0.0.1", "10.0.0.2")},
		{"dhcpcd", "domain_name_servers='203.0.113.1 203.0.113.2'\n", addrs4("203.0.113.1", "203.0.113.2")},
		{"no servers", "lease {\n  fixed-address 10.0.0.5;\n}\n", nil},
		{"junk skipped, each once, at most 8", "nameserver x\nnameserver 10.0.0.1\nnameserver 10.0.0.1\nnameserver 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 10.0.0.7 10.0.0.8 10.0.0.9 10.0.0.10\n",
			addrs4("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseLease([]byte(tc.data)); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzParseLease: whatever a lease file holds, ParseLease returns at most
// MaxDNS distinct addresses without a zone.
func FuzzParseLease(f *testing.F) {
	f.Add("nameserver 192.0.2.53\n")
	f.Add("option domain-name-servers 198.51.100.1, 198.51.100.2;\n")
	f.Add("DNS=10.0.0.1 fe80::1%eth0\n")
	f.Add("domain_name_servers='203.0.113.1'\n")
	f.Fuzz(func(t *testing.T, data string) {
		got := ParseLease([]byte(data))
		if len(got) > config.MaxDNS {
			t.Fatalf("%d servers", len(got))
		}
		for i, a := range got {
			if !a.IsValid() || a.Zone() != "" || slices.Contains(got[:i], a) {
				t.Fatalf("server %v in %v", a, got)
			}
		}
	})
}

const twoLinks = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    gateway6: 2001:db8:1::1
    tier: 2
    dns: [192.0.2.53, 2001:db8:1::53, 9.9.9.9]
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    dns: auto
`

// The servers of the links up, tier by tier in the default policy's
// order, each once; a family down drops that family's servers only.
func TestServers(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(twoLinks))
	if err != nil {
		t.Fatal(err)
	}
	auto := map[string][]netip.Addr{"isp2": addrs4("198.51.100.53", "9.9.9.9")}
	for _, tc := range []struct {
		name string
		down []string // unit keys down
		want []netip.Addr
	}{
		{"all up: isp2 (tier 1) first", nil, addrs4("198.51.100.53", "9.9.9.9", "192.0.2.53", "2001:db8:1::53")},
		{"isp2 down", []string{"isp2"}, addrs4("192.0.2.53", "2001:db8:1::53", "9.9.9.9")},
		{"isp1 IPv6 down", []string{"isp1/ipv6"}, addrs4("198.51.100.53", "9.9.9.9", "192.0.2.53")},
		{"all down", []string{"isp1", "isp1/ipv6", "isp2"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := func(i int, v6 bool) bool {
				k := c.Links[i].Name
				if v6 {
					k += "/ipv6"
				}
				return !slices.Contains(tc.down, k)
			}
			if got := Servers(c, auto, up); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// The file is replaced whole (never written in place), only when its
// text changes, and is readable by a resolver running as its own user.
func TestWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	w := &Writer{Dir: dir}
	path := filepath.Join(dir, FileName)
	wrote, err := w.Write(addrs4("192.0.2.53"))
	if err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("stat: %v %v", fi, err)
	}
	if wrote, _ := w.Write(addrs4("192.0.2.53")); wrote {
		t.Error("rewrote an unchanged file")
	}
	// A reader holding the old file keeps reading the old text.
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if wrote, _ := w.Write(nil); !wrote {
		t.Error("did not write a change")
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "nameserver") || !strings.Contains(string(b), "No link with DNS servers is up") {
		t.Errorf("new file:\n%s", b)
	}
	ob := make([]byte, 4096)
	n, _ := old.Read(ob)
	if !strings.Contains(string(ob[:n]), "nameserver 192.0.2.53") {
		t.Errorf("the old file changed under its reader:\n%s", ob[:n])
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestReadLease(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(b, []byte("nameserver 10.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, from, err := ReadLease([]string{a, b})
	if err != nil || from != b || !slices.Equal(got, addrs4("10.0.0.1")) {
		t.Errorf("got %v from %s, %v", got, from, err)
	}
	if _, _, err := ReadLease([]string{dir}); err == nil {
		t.Error("a directory read as a lease")
	}
}

// Changes within one second get files of different whole-second mtimes:
// dnsmasq compares them to notice a new file.
func TestWriterMtimes(t *testing.T) {
	w := &Writer{Dir: t.TempDir()}
	path := filepath.Join(w.Dir, FileName)
	var last time.Time
	for i, servers := range [][]netip.Addr{addrs4("192.0.2.53"), nil, addrs4("192.0.2.53"), nil} {
		if _, err := w.Write(servers); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		m := fi.ModTime().Truncate(time.Second)
		if i > 0 && !m.After(last) {
			t.Errorf("write %d: mtime %v, the one before %v", i, m, last)
		}
		last = m
	}
}
