package dnslease

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
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

// Read takes each dns: auto link's dns_from; a link that names its
// servers is not read.
func TestRead(t *testing.T) {
	lease := filepath.Join(t.TempDir(), "lte.lease")
	if err := os.WriteFile(lease, []byte("DNS=10.9.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("f.yaml", []byte("links:\n  - {name: a, interface: x, gateway: 10.0.0.1, dns: [10.0.0.53]}\n  - {name: lte, interface: y, gateway: auto, dns: auto, dns_from: "+lease+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	servers, from, errs := Read(c)
	if len(servers) != 1 || !slices.Equal(servers["lte"], addrs4("10.9.0.1")) || from["lte"] != lease || len(errs) != 0 {
		t.Errorf("servers %v from %v errs %v", servers, from, errs)
	}
}

// A dns_from that is a FIFO (a careless path, or a client's pipe) is
// refused at once: opening it to read would block the daemon's loop
// until some writer opened it, and the watchdog would kill the daemon.
func TestReadLeaseFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lease")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := ReadLease([]string{p})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a FIFO read as a lease")
		}
	case <-time.After(5 * time.Second):
		// Unblock the reader, so the test ends.
		if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("ReadLease blocked on a FIFO")
	}
}
