package nft

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Hits is a traffic rule's counter: the new flows it classified (their
// first packets) and their bytes.
type Hits struct {
	Packets, Bytes uint64
}

// RuleHits reads the counter of every traffic rule's chain, by rule name.
// One dump per rule chain; a missing table gives none.
func (c *Conn) RuleHits() (map[string]Hits, error) {
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t, err := nc.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return map[string]Hits{}, nil
		}
		return nil, fmt.Errorf("list table inet %s: %w", TableName, err)
	}
	chs, err := nc.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	out := map[string]Hits{}
	for _, ch := range chs {
		name, ok := strings.CutPrefix(ch.Name, "rule_")
		if ch.Table.Name != TableName || !ok {
			continue
		}
		rs, err := nc.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rs {
			for _, e := range r.Exprs {
				if cnt, ok := e.(*expr.Counter); ok {
					out[name] = Hits{Packets: cnt.Packets, Bytes: cnt.Bytes}
				}
			}
		}
	}
	return out, nil
}
