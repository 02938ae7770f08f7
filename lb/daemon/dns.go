package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"flowpin/lb/config"
	"flowpin/lb/daemon/resolv"
	"flowpin/lb/dnslease"
	"flowpin/lb/health"
	"flowpin/lb/plan"
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
	servers, from, errs := dnslease.Read(d.Config)
	for name, s := range servers {
		key := from[name] + " " + addrList(s) + " " + fmt.Sprint(errs[name])
		if d.leaseSeen == nil {
			d.leaseSeen = map[string]string{}
		}
		if d.leaseSeen[name] == key {
			continue
		}
		d.leaseSeen[name] = key
		switch {
		case errs[name] != nil:
			d.Log.Warn("dns: auto: cannot read the lease", "link", name, "file", from[name], "err", errs[name])
		case from[name] == "":
			d.Log.Warn("dns: auto: no lease file found (give links[].dns_from)", "link", name)
		default:
			d.Log.Info("dns: auto: servers from the lease", "link", name, "file", from[name], "servers", addrList(s))
		}
	}
	return servers
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

// writeResolv writes the resolv file for the plan des: the servers of
// the links whose family is in its route, as the servers' routes go (a
// drained link's server has none through its link, and links that all
// failed their checks stay in the route: fail open).
func (d *Daemon) writeResolv(des *plan.Desired, auto map[string][]netip.Addr) {
	if d.resolv == nil || !hasDNS(d.Config) {
		return
	}
	inRoute := func(i int, v6 bool) bool {
		if v6 {
			return des.Links[i].V6.InRoute
		}
		return des.Links[i].InRoute
	}
	servers := resolv.Pick(d.Config, auto, inRoute)
	wrote, err := d.resolv.Write(servers)
	// After the write: a file that could not be written still lists what
	// it listed before.
	v := &dnsView{byLink: map[string][]netip.Addr{}, listed: d.resolv.Listed()}
	for i, l := range d.Config.Links {
		v.byLink[l.Name] = plan.LinkResolvers(d.Config, i, auto)
	}
	d.dns.Store(v)
	switch {
	case err != nil:
		d.Log.Error("dns: write the resolv file", "dir", d.resolv.Dir, "err", err)
	case wrote:
		d.Log.Info("dns: resolv file written", "file", d.resolv.Dir+"/"+resolv.FileName, "servers", addrList(servers))
	}
}

// dnsView is each link's DNS servers as the resolv file was last written
// (plan.LinkResolvers), and the servers the file lists.
type dnsView struct {
	byLink map[string][]netip.Addr
	listed []netip.Addr
}

// dnsOf is link's servers, each with whether the resolv file lists it
// now; nil before the first write, or for a link without servers.
func (d *Daemon) dnsOf(link string) []health.DNSServer {
	v := d.dns.Load()
	if v == nil {
		return nil
	}
	var out []health.DNSServer
	for _, a := range v.byLink[link] {
		out = append(out, health.DNSServer{Address: a, InResolv: slices.Contains(v.listed, a)})
	}
	return out
}
