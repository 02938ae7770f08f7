package config

import (
	"errors"
	"strings"
	"testing"
)

// A nat_source that cannot be the link's address: a gateway's (SNAT to
// it sends the replies to the router the flows left by), the same one as
// a link on another interface (one address is routed to one link, and on
// an HA pair keepalived holds it on one interface), an address of
// 0.0.0.0/8 (no host has one).
func TestParseNATSourceConflicts(t *testing.T) {
	two := func(a, b string) string {
		return "links:\n  - {name: a, interface: x, gateway: 192.0.2.1, gateway6: 2001:db8::1, nat: true" + a + "}\n  - {name: b, interface: y, gateway: 198.51.100.1, nat: true" + b + "}\n"
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"own gateway", two(", nat_source: 192.0.2.1", ""), `f.yaml:2: links[0].nat_source: 192.0.2.1 is link "a"'s gateway: flows SNATed to it would have their replies sent to that router, not to this one`},
		{"other link's gateway", two("", ", nat_source: 192.0.2.1"), `f.yaml:3: links[1].nat_source: 192.0.2.1 is link "a"'s gateway: flows SNATed to it would have their replies sent to that router, not to this one`},
		{"own gateway6", two(", nat_source: 2001:db8::1", ""), `f.yaml:2: links[0].nat_source: 2001:db8::1 is link "a"'s gateway6: flows SNATed to it would have their replies sent to that router, not to this one`},
		{"same on another interface", two(", nat_source: 192.0.2.2", ", nat_source: 192.0.2.2"), `f.yaml:3: links[1].nat_source: 192.0.2.2 is also links[0]'s, on interface x: an address is routed to one link (and keepalived holds a VIP on one interface), so the replies of flows leaving by y would not come back by it`},
		{"this network", two(", nat_source: 0.0.0.1", ""), `f.yaml:2: links[0].nat_source: 0.0.0.1 cannot be a flow's source address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) || err.Error() != tc.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
	// Links on one interface share it, as they share the interface.
	if _, err := Parse("f.yaml", []byte("links:\n  - {name: a, interface: x, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.9}\n  - {name: b, interface: x, gateway: 192.0.2.254, nat: true, nat_source: 192.0.2.9}\n")); err != nil {
		t.Errorf("shared interface, one nat_source: %v", err)
	}
}

// A link with nat: false on the interface of a link with a nat_source is
// refused: the SNAT to a nat_source goes by the interface a flow leaves
// by, so its flows would be SNATed too.
func TestParseNATSourceSharedWithoutNAT(t *testing.T) {
	for _, y := range []string{
		"links:\n  - {name: a, interface: x, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.9}\n  - {name: b, interface: x, gateway: 192.0.2.254}\n",
		"links:\n  - {name: b, interface: x, gateway: 192.0.2.254}\n  - {name: a, interface: x, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.9}\n",
	} {
		_, err := Parse("f.yaml", []byte(y))
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), `nat: false, but it shares interface x with link "a", whose nat_source 192.0.2.9`) {
			t.Errorf("%s: %v", y, err)
		}
	}
}
