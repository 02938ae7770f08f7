package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Bad exec, arp and dns settings: one line naming file, line, field and
// value.
func TestParseExecARPDNSErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"exec without command", link0("    check: {method: exec}\n"), "f.yaml:5: links[0].check.command: missing: method exec runs a command (command: /usr/local/bin/check-wan, say)"},
		{"exec blank command", link0("    check: {method: exec, command: '  '}\n"), "f.yaml:5: links[0].check.command: missing: method exec runs a command (command: /usr/local/bin/check-wan, say)"},
		{"command with icmp", link0("    check: {command: /bin/true}\n"), `f.yaml:5: links[0].check.command: "/bin/true": a command is for the exec method, and this check uses icmp`},
		{"command too long", link0("    check: {method: exec, command: '" + strings.Repeat("x", MaxCommand+1) + "'}\n"), `f.yaml:5: links[0].check.command: "` + strings.Repeat("x", 64) + `"… (4097 bytes) is not a command: at most 4096 bytes of text`},
		{"exec quorum 2", link0("    check: {method: exec, command: /bin/true, targets: [10.9.9.9, 10.9.9.8], quorum: 2}\n"), "f.yaml:5: links[0].check.quorum: 2: an exec probe is one answer per round (the command's exit status); leave quorum at 1"},
		{"exec port", link0("    check: {method: exec, command: /bin/true, port: 80}\n"), "f.yaml:5: links[0].check.port: 80: a port is for the tcp, http and dns methods, and this check uses exec"},
		{"arp targets", link0("    check: {method: arp, targets: [10.9.9.9]}\n"), "f.yaml:5: links[0].check.targets: 10.9.9.9: the arp method asks for the gateway itself, on the link; remove targets (or probe them with icmp)"},
		{"arp port", link0("    check: {method: arp, port: 53}\n"), "f.yaml:5: links[0].check.port: 53: a port is for the tcp, http and dns methods, and this check uses arp"},
		{"dns not an address", link0("    dns: [10.0.0.53, ns1]\n"), `f.yaml:5: links[0].dns[1]: "ns1" is not an IP address`},
		{"dns word", link0("    dns: automatic\n"), `f.yaml:5: links[0].dns: "automatic": want a list of addresses ([192.0.2.53, 2001:db8::53]), or auto`},
		{"dns quoted auto", link0("    dns: 'auto'\n"), `f.yaml:5: links[0].dns: "auto": want a list of addresses ([192.0.2.53, 2001:db8::53]), or auto`},
		{"dns mapping", link0("    dns: {a: 1}\n"), `f.yaml:5: links[0].dns: want a list of addresses, or auto, not a mapping`},
		{"dns empty", link0("    dns: []\n"), `f.yaml:5: links[0].dns: an empty list: name the link's resolvers, or write auto`},
		{"dns too many", link0("    dns: [1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4, 1.1.1.5, 1.1.1.6, 1.1.1.7, 1.1.1.8, 1.1.1.9]\n"), `f.yaml:5: links[0].dns: 9 entries: at most 8 are supported`},
		{"dns twice", link0("    dns: [10.0.0.53, 10.0.0.53]\n"), `f.yaml:5: links[0].dns[1]: 10.0.0.53 is listed twice`},
		{"dns loopback", link0("    dns: [127.0.0.53]\n"), `f.yaml:5: links[0].dns[0]: 127.0.0.53 is this host: a local resolver does not follow a link (point it at /run/flowpin/resolv.conf instead)`},
		{"dns link-local", link0("    gateway6: fe80::1\n    dns: [fe80::53]\n"), `f.yaml:6: links[0].dns[0]: fe80::53 is link-local: give the resolver's routable address`},
		{"dns zone", link0("    dns: ['fe80::53%x']\n"), `f.yaml:5: links[0].dns[0]: "fe80::53%x" is not an IP address`},
		{"dns IPv6 on an IPv4 link", link0("    dns: [10.0.0.53, 2001:db8::53]\n"), `f.yaml:5: links[0].dns[1]: 2001:db8::53 is IPv6, and link "a" carries no IPv6 (no gateway6)`},
		{"dns IPv4 on an IPv6 link", "links:\n  - name: a\n    interface: x\n    gateway6: fe80::1\n    dns: [10.0.0.53]\n", `f.yaml:5: links[0].dns[0]: 10.0.0.53 is IPv4, and link "a" carries no IPv4 (no gateway)`},
		{"dns_from without auto", link0("    dns_from: /run/x\n"), `f.yaml:5: links[0].dns_from: "/run/x": dns_from is where dns: auto reads the lease, and this link has no dns: auto`},
		{"dns_from with a list", link0("    dns: [10.0.0.53]\n    dns_from: /run/x\n"), `f.yaml:6: links[0].dns_from: "/run/x": dns_from is for dns: auto, and this link lists its servers`},
		{"dns_from relative", link0("    dns: auto\n    dns_from: run/x\n"), `f.yaml:6: links[0].dns_from: "run/x" is not a clean absolute path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestParseExecARPDNS(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`links:
  - name: a
    interface: x
    gateway: 10.0.0.1
    gateway6: 2001:db8::1
    dns: [10.0.0.53, 2001:db8::53]
    check: {method: exec, command: 'ping -c1 -m "$FLOWPIN_MARK" 192.0.2.1', interval: 2s, timeout: 1s}
  - name: b
    interface: y
    gateway: 10.1.0.1
    dns: auto
    dns_from: /run/b.lease
    check: {method: arp}
  - name: c
    interface: z
    gateway: 10.2.0.1
    dns: [10.0.0.53]
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b, cc := c.Links[0], c.Links[1], c.Links[2]
	if a.Check.Method != ProbeExec || a.Check.Command != `ping -c1 -m "$FLOWPIN_MARK" 192.0.2.1` || a.Check.Timeout.String() != "1s" {
		t.Errorf("a's check: %+v", a.Check)
	}
	if !slices.Equal(a.DNS, []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("2001:db8::53")}) || a.DNSAuto {
		t.Errorf("a's dns: %v auto %v", a.DNS, a.DNSAuto)
	}
	if b.Check.Method != ProbeARP || !b.DNSAuto || b.DNSFrom != "/run/b.lease" || b.DNS != nil {
		t.Errorf("b: %+v", b)
	}
	// The same server on two links is allowed: a public resolver both reach.
	if !slices.Equal(cc.DNS, []netip.Addr{netip.MustParseAddr("10.0.0.53")}) {
		t.Errorf("c's dns: %v", cc.DNS)
	}
}

// MarshalYAML writes dns as the config has it: auto, or the list.
func (r rawDNS) MarshalYAML() (any, error) {
	if r.Auto {
		return "auto", nil
	}
	return r.Addrs, nil
}

// renderDNS writes a link's dns and dns_from back (FuzzParse).
func renderDNS(rl *rawLink, l Link) {
	switch {
	case l.DNSAuto:
		rl.DNS = &rawDNS{Auto: true}
		if l.DNSFrom != "" {
			rl.DNSFrom = &l.DNSFrom
		}
	case len(l.DNS) > 0:
		rd := &rawDNS{}
		for _, a := range l.DNS {
			rd.Addrs = append(rd.Addrs, a.String())
		}
		rl.DNS = rd
	}
}
