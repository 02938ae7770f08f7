package status

import (
	"fmt"
	"io"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/rules"
)

// Interfaces is what status reads of the interfaces: the addresses that
// say whether this node of an HA pair holds the VIPs.
type Interfaces interface {
	Interfaces() (map[string]rules.Iface, error)
}

// HAStatus is an HA pair node's role, read from its own addresses each
// time (never remembered), so it is true on the backup and mid-takeover
// alike, with or without a daemon.
type HAStatus struct {
	// Role: primary (holds every VIP), backup (none), split (some: a
	// takeover under way, or a pair in trouble).
	Role plan.Role `json:"role"`
	// VIPs are the links' nat_source addresses and where they are held.
	VIPs []plan.VIP `json:"vips"`
}

// AddHA adds the node's role to s when the config has ha or a
// nat_source.
func AddHA(s *Status, c *config.Config, ifs Interfaces) error {
	if ifs == nil || (!c.HA && len(c.NATSources()) == 0) {
		return nil
	}
	ifaces, err := ifs.Interfaces()
	if err != nil {
		return err
	}
	vips := plan.VIPs(c, ifaces)
	s.HA = &HAStatus{Role: plan.RoleOf(vips), VIPs: vips}
	for _, v := range vips {
		if w := plan.VIPElsewhere(c, v); w != "" {
			s.Warnings = append(s.Warnings, w)
		}
		if w := plan.VIPDADFailed(v); w != "" {
			s.Warnings = append(s.Warnings, w)
		}
	}
	if !c.HA {
		// A fixed public address, not a pair: only where it is matters.
		s.HA.Role = ""
		for _, v := range vips {
			if v.Iface == "" && v.DADFailed == "" {
				s.Warnings = append(s.Warnings, fmt.Sprintf("nat_source %s is on no interface of this host: replies to it arrive only if the ISP routes it here", v.Addr))
			}
		}
	}
	return nil
}

// writeHA is the role line of `flowpin status`.
func writeHA(w io.Writer, h *HAStatus) {
	if h == nil || h.Role == "" {
		return
	}
	var held, not []string
	for _, v := range h.VIPs {
		if v.Iface != "" {
			held = append(held, v.Addr.String()+" on "+Printable(v.Iface))
		} else {
			not = append(not, v.Addr.String())
		}
	}
	switch h.Role {
	case plan.RolePrimary:
		fmt.Fprintf(w, "ha: primary: holds the VIPs (%s)\n", strings.Join(held, ", "))
	case plan.RoleBackup:
		fmt.Fprintf(w, "ha: backup: holds none of the VIPs (%s); the peer routes the pair's flows, and hooks and on-demand commands wait here\n", strings.Join(not, ", "))
	default:
		fmt.Fprintf(w, "ha: split: holds %s but not %s (a takeover under way, or the pair disagrees)\n", strings.Join(held, ", "), strings.Join(not, ", "))
	}
}
