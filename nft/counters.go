package nft

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Counter is what one rule's counter has seen since the rule was added.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func (c Counter) plus(o Counter) Counter {
	return Counter{Packets: c.Packets + o.Packets, Bytes: c.Bytes + o.Bytes}
}

// CounterKey names a rule's counter: its chain and its purpose (the part
// of its comment before the digest: "save isp1", "restore isp1").
func CounterKey(chain, why string) string { return chain + " " + why }

// Counters reads the counter of every rule of the table that counts a
// link's traffic, keyed by CounterKey with the base chain the rule's
// chain serves (a link's restore in prerouting is "prerouting restore
// isp1", though it sits in the link's own chain): one dump per link chain,
// so the cost grows with the number of links, not of flows. A missing
// table gives an empty map. Counters start at zero when the table is
// (re)written.
func (c *Conn) Counters() (map[string]Counter, error) {
	nc, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer nc.CloseLasting()
	out := map[string]Counter{}
	t, err := nc.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return out, nil
		}
		return nil, fmt.Errorf("list table inet %s: %w", TableName, err)
	}
	chs, err := nc.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chs {
		base := counterBase(ch.Name)
		if ch.Table.Name != TableName || base == "" {
			continue // records and traffic rules: not a link's traffic
		}
		rs, err := nc.GetRules(t, ch)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rs {
			cm, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			why, _, _ := strings.Cut(cm, " #")
			for _, e := range r.Exprs {
				if ce, ok := e.(*expr.Counter); ok {
					k := CounterKey(base, why)
					out[k] = out[k].plus(Counter{Packets: ce.Packets, Bytes: ce.Bytes})
				}
			}
		}
	}
	return out, nil
}

// LinkTraffic adds up a link's traffic from the counters of its rules.
//
// Out is every packet that left by the link: packets of flows pinned to it
// restored in prerouting (forwarded) and output (the box's own), plus the
// packets that pinned a flow on the way out (postrouting save: a flow's
// first packet has no mark yet, so no restore matched it). Each packet
// matches exactly one of these. In is every packet that arrived on the
// link's interface (the "from" rule of its prerouting chain, which every
// such packet reaches, the pinning save rule before it included).
func LinkTraffic(m map[string]Counter, link string) (out, in Counter) {
	out = m[CounterKey("prerouting", "restore "+link)].
		plus(m[CounterKey("output", "restore "+link)]).
		plus(m[CounterKey("postrouting", "save "+link)])
	in = m[CounterKey("prerouting", "from "+link)]
	return out, in
}
