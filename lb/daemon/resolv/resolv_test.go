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
			// With no link in the route, Pick lists every link's servers
			// rather than none (a resolver would ask 127.0.0.1).
			want := tc.want
			if want == nil {
				want = addrs4("198.51.100.53", "9.9.9.9", "192.0.2.53", "2001:db8:1::53")
			}
			if got := Pick(c, auto, up); !slices.Equal(got, want) {
				t.Errorf("Pick: got %v, want %v", got, want)
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
	if strings.Contains(string(b), "nameserver") || !strings.Contains(string(b), "No link has DNS servers") {
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

// A directory others may write (a --resolv-dir of /tmp, or one left
// 0777) is refused: whoever can write there can put their own file, or a
// symlink to one, where the resolver reads its servers.
func TestWriterRefusesAnOpenDir(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o775, os.ModeSticky | 0o777} {
		dir := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		w := &Writer{Dir: dir}
		if _, err := w.Write(addrs4("192.0.2.53")); err == nil || !strings.Contains(err.Error(), "others may write") {
			t.Errorf("dir mode %v: %v", mode, err)
		}
		if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
			t.Errorf("dir mode %v: written", mode)
		}
	}
}

// A new daemon (a restart) goes on from the file's mtime: dnsmasq reads a
// resolv file only if its mtime differs from the one it last read, and
// the last daemon's may be ahead of the clock (a link that flapped ten
// times a second gave each version a second of its own), so a restart's
// first file could get the very second dnsmasq last read.
func TestWriterMtimeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ahead := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, ahead, ahead); err != nil {
		t.Fatal(err)
	}
	w := &Writer{Dir: dir}
	if _, err := w.Write(addrs4("198.51.100.53")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().After(ahead) {
		t.Errorf("mtime %v, not after the last daemon's %v: dnsmasq would not read it", fi.ModTime(), ahead)
	}
}

// Listed is what the file holds: the servers of the last write that
// succeeded, not those of one that failed.
func TestWriterListed(t *testing.T) {
	dir := t.TempDir()
	w := &Writer{Dir: dir}
	if got := w.Listed(); len(got) != 0 {
		t.Errorf("before any write: %v", got)
	}
	if _, err := w.Write(addrs4("192.0.2.53", "2001:db8::53")); err != nil {
		t.Fatal(err)
	}
	if got := w.Listed(); !slices.Equal(got, addrs4("192.0.2.53", "2001:db8::53")) {
		t.Errorf("after a write: %v", got)
	}
	// The directory is gone and a file in its place: the write fails.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(addrs4("198.51.100.53")); err == nil {
		t.Fatal("a write into a file succeeded")
	}
	if got := w.Listed(); !slices.Equal(got, addrs4("192.0.2.53", "2001:db8::53")) {
		t.Errorf("after a failed write: %v", got)
	}
}
