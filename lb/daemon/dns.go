package daemon

import (
	"net/netip"
	"slices"

	"flowpin/lb/config"
	"flowpin/lb/daemon/resolv"
)

// hasDNS: some link names DNS servers, so the daemon writes the resolv
// file.
func hasDNS(c *config.Config) bool {
	return slices.ContainsFunc(c.Links, func(l config.Link) bool { return len(l.DNS) > 0 || l.DNSAuto })
}

// leaseDNS reads the servers of the links with dns: auto from their
// leases, at every sync: a renewed lease comes with address and route
// notifications, and the resync backstop catches the rest. A lease it
// cannot read gives none, and says so once per change.
func (d *Daemon) leaseDNS() map[string][]netip.Addr {
	var out map[string][]netip.Addr
	for _, l := range d.Config.Links {
		if !l.DNSAuto {
			continue
		}
		paths := []string{l.DNSFrom}
		if l.DNSFrom == "" {
			paths = resolv.LeasePaths(l.Interface)
		}
		servers, from, err := resolv.ReadLease(paths)
		if out == nil {
			out = map[string][]netip.Addr{}
		}
		out[l.Name] = servers
		msg := from
		if err != nil {
			msg = from + ": " + err.Error()
		}
		if d.leaseSeen == nil {
			d.leaseSeen = map[string]string{}
		}
		if key := msg + " " + addrList(servers); d.leaseSeen[l.Name] != key {
			d.leaseSeen[l.Name] = key
			if err != nil {
				d.Log.Warn("dns: auto: cannot read the lease", "link", l.Name, "file", from, "err", err)
			} else {
				d.Log.Info("dns: auto: servers from the lease", "link", l.Name, "file", from, "servers", addrList(servers))
			}
		}
	}
	return out
}

func addrList(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += " "
		}
		s += a.String()
	}
	return s
}

// writeResolv writes the resolv file for the health the plan des was
// made with: the servers of the links whose family is up.
func (d *Daemon) writeResolv(auto map[string][]netip.Addr) {
	if d.resolv == nil || !hasDNS(d.Config) {
		return
	}
	up := func(i int, v6 bool) bool {
		_, down := d.board.Down(unitKey(d.Config.Links[i].Name, v6))
		return !down
	}
	servers := resolv.Servers(d.Config, auto, up)
	wrote, err := d.resolv.Write(servers)
	switch {
	case err != nil:
		d.Log.Error("dns: write the resolv file", "dir", d.resolv.Dir, "err", err)
	case wrote:
		d.Log.Info("dns: resolv file written", "file", d.resolv.Dir+"/"+resolv.FileName, "servers", addrList(servers))
	}
}
