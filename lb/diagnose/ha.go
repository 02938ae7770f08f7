package diagnose

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/lb/status"
	"flowpin/nft"
)

// An HA pair is consistent when both nodes give every link the same mark
// and table (a synced flow carries its mark, which must route the same on
// the node that takes it over), both have the guard rule and SNAT to the
// VIPs, and exactly one holds the VIPs. haChecks are this node's side;
// SyncCheck says whether conntrackd runs in this node's network
// namespace (pids, or err if that cannot be told). Nothing else shows its
// absence: the pair looks consistent, the VIPs move, and every flow dies
// at the takeover, as the peer never got a copy.
func SyncCheck(pids []int, err error) VerifyCheck {
	const name = "ha conntrackd"
	switch {
	case err != nil:
		return VerifyCheck{Name: name, Skip: true, Detail: fmt.Sprintf("cannot tell whether conntrackd runs here: %v", err)}
	case len(pids) == 0:
		return VerifyCheck{Name: name, Detail: "no conntrackd runs in this network namespace: the peer gets no copy of this node's flows (and their pins), so a takeover would break every one of them (verify sees the processes of its own PID namespace only: a conntrackd in another container that shares this network namespace is not seen)",
			Fix: "start conntrackd with the pair's conntrackd.conf before keepalived (conntrackd -d; README, HA pair)"}
	}
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = fmt.Sprint(p)
	}
	return VerifyCheck{Name: name, OK: true, Detail: fmt.Sprintf("conntrackd runs here (pid %s): it copies the flows, and their pins, to the peer", strings.Join(s, ", "))}
}

// PeerChecks compare it with the peer's status, when verify can reach it
// (verify --peer).

// LayoutDigest is a short digest of what both nodes of a pair must agree
// on: the mark mask, the balance table and each link's name, mark, table
// and nat_source. Two nodes with the same digest pin alike.
func LayoutDigest(c *config.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mask %#x balance %d base %d\n", c.MarkMask, c.BalanceTable, c.PriorityBase)
	for _, l := range c.Links {
		fmt.Fprintf(&b, "%s %#x %d %s\n", l.Name, l.Mark, l.Table, l.NATSource)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:6])
}

func layoutText(c *config.Config) string {
	var parts []string
	for _, l := range c.Links {
		parts = append(parts, fmt.Sprintf("%s mark %#x table %d", l.Name, l.Mark, l.Table))
	}
	return strings.Join(parts, ", ")
}

// HAChecks are this node's side of the pair: c as resolved, d planned
// against the interfaces, cur the nft table as read.
func HAChecks(c *config.Config, d *plan.Desired, cur *nft.Current) []VerifyCheck {
	if !c.HA {
		return nil
	}
	var out []VerifyCheck
	add := func(ok bool, name, fix, format string, args ...any) {
		out = append(out, VerifyCheck{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...), Fix: fix})
	}
	// The marks and tables come from the config alone (config.Resolve);
	// what is applied must be those, not a history from before ha.
	var differ []string
	applied := map[string]nft.LinkRecord{}
	for _, r := range cur.Records.Links {
		applied[r.Name] = r
	}
	for _, l := range c.Links {
		if r, ok := applied[l.Name]; ok && (r.Mark != l.Mark || r.Table != l.Table) {
			differ = append(differ, fmt.Sprintf("%s applied with mark %#x table %d", l.Name, r.Mark, r.Table))
		}
	}
	if len(differ) > 0 {
		add(false, "ha layout", applyFix, "the config gives %s, but %s: the peer pins by the config's", layoutText(c), strings.Join(differ, ", "))
	} else {
		add(true, "ha layout", "", "marks and tables from the config alone (layout %s, the same on both nodes with the same config): %s", LayoutDigest(c), layoutText(c))
	}
	guard := slices.ContainsFunc(cur.Chains["prerouting"], func(cm string) bool { return strings.HasPrefix(cm, nft.GuardWhy+" ") })
	if guard {
		add(true, "ha guard", "", "TCP packets that would start a flow without a SYN are dropped (no resets for mid-stream packets during a takeover)")
	} else {
		add(false, "ha guard", applyFix, "missing: the rule that drops TCP packets that would start a flow without a SYN; during a takeover this node would answer mid-stream packets with resets")
	}
	var snat []string
	for _, l := range c.Links {
		if l.NATSource.IsValid() {
			snat = append(snat, fmt.Sprintf("%s to %s", l.Name, l.NATSource))
		}
	}
	haveMap := slices.Contains(cur.Sets, "nat_source4") || slices.Contains(cur.Sets, "nat_source6")
	if len(snat) > 0 && !haveMap {
		add(false, "ha nat_source", applyFix, "the table has no nat_source map: flows are not SNATed to the VIPs (%s)", strings.Join(snat, ", "))
	} else if len(snat) > 0 {
		add(true, "ha nat_source", "", "new flows are SNATed to the VIPs, not masqueraded: %s", strings.Join(snat, ", "))
	}
	role := plan.RoleOf(d.VIPs)
	var held, not []string
	for _, v := range d.VIPs {
		if v.Iface != "" {
			held = append(held, v.Addr.String()+" on "+status.Printable(v.Iface))
		} else {
			not = append(not, v.Addr.String())
		}
	}
	switch role {
	case plan.RolePrimary:
		add(true, "ha role", "", "primary: this node holds every VIP (%s)", strings.Join(held, ", "))
	case plan.RoleBackup:
		add(true, "ha role", "", "backup: this node holds none of the VIPs (%s)", strings.Join(not, ", "))
	default:
		add(false, "ha role", "check keepalived on both nodes: one instance must move every VIP together",
			"split: this node holds %s but not %s", strings.Join(held, ", "), strings.Join(not, ", "))
	}
	return out
}

// PeerChecks compare this node (c, role) with the peer's status, or say
// why it could not be read (err). The peer's strings come from the
// network and are printed to a terminal: only their printable form goes
// into a detail.
func PeerChecks(c *config.Config, role plan.Role, peer *status.Status, err error) []VerifyCheck {
	if !c.HA {
		// Asked to compare a pair, this node is not one of a pair: saying
		// nothing would read as "the pair is consistent".
		return []VerifyCheck{{Name: "ha peer", Detail: "--peer given, but this node's config has no ha: true: it is not one node of an HA pair, so there is nothing to compare",
			Fix: "set ha: true in the config of both nodes (README, HA pair), or leave out --peer"}}
	}
	if err != nil {
		return []VerifyCheck{{Name: "ha peer", Detail: fmt.Sprintf("cannot read the peer's status: %v; only this node's side is checked", err),
			Fix: "run the peer's daemon with --metrics ADDR --public-status on the sync link, and give verify --peer http://ADDR"}}
	}
	var out []VerifyCheck
	add := func(ok bool, name, fix, format string, args ...any) {
		out = append(out, VerifyCheck{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...), Fix: fix})
	}
	const sameConfig = "give both nodes the same flowpin.yaml, then flowpin apply (or reload) on each"
	if peer.HA == nil || peer.HA.Role == "" {
		add(false, "ha peer", sameConfig, "the peer does not run with ha: true")
		return out
	}
	var differ []string
	if peer.MarkMask != c.MarkMask {
		differ = append(differ, fmt.Sprintf("mark_mask %#x here, %#x there", c.MarkMask, peer.MarkMask))
	}
	for _, l := range c.Links {
		i := slices.IndexFunc(peer.Links, func(p status.LinkStatus) bool { return p.Name == l.Name })
		switch {
		case i < 0:
			differ = append(differ, fmt.Sprintf("link %s is not the peer's", l.Name))
		case peer.Links[i].Mark != l.Mark || peer.Links[i].Table != l.Table:
			differ = append(differ, fmt.Sprintf("link %s: mark %#x table %d here, mark %#x table %d there", l.Name, l.Mark, l.Table, peer.Links[i].Mark, peer.Links[i].Table))
		}
	}
	for _, p := range peer.Links {
		if !slices.ContainsFunc(c.Links, func(l config.Link) bool { return l.Name == p.Name }) {
			differ = append(differ, fmt.Sprintf("the peer's link %s is not this node's", status.Printable(p.Name)))
		}
	}
	if len(differ) > 0 {
		// The peer's status may list any number of links (its body is
		// read up to 16 MiB): name a few differences, count the rest.
		const shown = 8
		if len(differ) > shown {
			differ = append(differ[:shown:shown], fmt.Sprintf("and %d more", len(differ)-shown))
		}
		add(false, "ha peer layout", sameConfig, "the nodes pin differently, so a takeover would route synced flows by the wrong links: %s", strings.Join(differ, "; "))
	} else {
		add(true, "ha peer layout", "", "the peer gives every link the same mark and table")
	}
	switch {
	case role == plan.RolePrimary && peer.HA.Role == plan.RoleBackup, role == plan.RoleBackup && peer.HA.Role == plan.RolePrimary:
		add(true, "ha peer role", "", "exactly one node holds the VIPs: this node is %s, the peer %s", role, peer.HA.Role)
	case role == plan.RolePrimary && peer.HA.Role == plan.RolePrimary:
		add(false, "ha peer role", "check that VRRP adverts pass between the nodes (the LAN, a firewall)", "both nodes hold the VIPs (split brain)")
	default:
		add(false, "ha peer role", "check keepalived on both nodes", "this node is %s and the peer %s: not exactly one node holds every VIP", role, status.Printable(string(peer.HA.Role)))
	}
	return out
}

// verifyHA adds this node's side of the pair and, with o.Peer, the
// comparison with the peer.
func (k *Kernel) verifyHA(r *VerifyReport, c *config.Config, d *plan.Desired, o VerifyOptions) error {
	if !c.HA {
		if o.Peer != nil {
			r.Checks = append(r.Checks, PeerChecks(c, "", nil, nil)...)
		}
		return nil
	}
	cur, err := k.NFT.Read()
	if err != nil {
		return err
	}
	r.Checks = append(r.Checks, HAChecks(c, d, cur)...)
	if k.SyncDaemons != nil {
		pids, err := k.SyncDaemons()
		r.Checks = append(r.Checks, SyncCheck(pids, err))
	}
	if o.Peer == nil {
		r.skip("ha peer", "not compared with the peer (verify --peer http://ADDR:PORT reads its status; see README, HA pair)")
		return nil
	}
	peer, err := o.Peer()
	r.Checks = append(r.Checks, PeerChecks(c, plan.RoleOf(d.VIPs), peer, err)...)
	return nil
}
