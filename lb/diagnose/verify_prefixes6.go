package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"flowpin/lb/plan"
	"flowpin/rules"
)

// verifyPrefixes6 asks the kernel where a new flow from each ISP prefix
// (prefixes6) goes: out of its own link, to its gateway. The flow is asked
// about as the LAN sends it, arriving on the interface that holds an
// address of the prefix (forwarded packets take another path through the
// rules than this host's own); with no such interface, as this host's own.
func (k *Kernel) verifyPrefixes6(r *VerifyReport, d *plan.Desired, ifaces map[string]rules.Iface, all []rules.RuleInfo, o VerifyOptions) {
	for _, pp := range d.Prefixes6 {
		l := d.Links[pp.Link]
		name := fmt.Sprintf("prefix %s", pp.Prefix)
		if !l.V6.InRoute {
			r.skip(name, "link %s's IPv6 is not in use (%s): its flows take the live links, translated", l.Name, l.V6.Why)
			continue
		}
		q := rules.Query{Dst: o.Probe6, Src: pp.Prefix.Masked().Addr().Next()}
		if dev, a, ok := lanOf(pp.Prefix, ifaces); ok {
			q.Iif = dev
			q.Src = a
		}
		ans, err := k.Routes.RouteGet(q)
		if err != nil {
			r.fail(name, applyFix, "ip route get %s: %v", q.Args(), err)
			continue
		}
		if ans.Dev == l.Interface {
			r.pass(name, "a flow from it leaves by link %s, %s (ip route get %s)", l.Name, hop(ans.Dev, ans.Gw), q.Args())
			continue
		}
		fq := q
		fq.FIBMatch = true
		plen := 0
		if e, err := k.Routes.RouteGet(fq); err == nil {
			plen = e.Dst.Bits()
		}
		by, fix := "no rule found", applyFix
		if mr, ok := MatchedRule(all, packetOf(q), ans.Table, plen); ok {
			by = "rule " + strings.ReplaceAll(mr.String(), "\t", " ")
			if !mr.Owned() {
				by += " (not flowpin's)"
				fix = fmt.Sprintf("ip rule del pref %d, or move it after flowpin's rules", mr.Priority)
			}
		}
		r.fail(name, fix, "a flow from it leaves by %s, want link %s (%s), whose ISP alone accepts it: table %s, %s (ip route get %s)",
			hop(orNone(ans.Dev), ans.Gw), l.Name, l.Interface, rules.TableName(ans.Table), by, q.Args())
	}
}

// lanOf finds an interface holding an address of p (the LAN the prefix is
// given to) and a neighbour's address on it: the address's own subnet with
// the host part ::f1 (or ::f2 if that is the interface's own).
func lanOf(p netip.Prefix, ifaces map[string]rules.Iface) (string, netip.Addr, bool) {
	for _, name := range sortedNames(ifaces) {
		for _, a := range ifaces[name].Addrs {
			if !p.Contains(a.Addr()) {
				continue
			}
			b := a.Masked().Addr().As16()
			b[15] = 0xf1
			if netip.AddrFrom16(b) == a.Addr() {
				b[15] = 0xf2
			}
			return name, netip.AddrFrom16(b), true
		}
	}
	return "", netip.Addr{}, false
}

func sortedNames(m map[string]rules.Iface) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
