package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"flowpin/lb/config"
	"flowpin/nft"
)

// SetStatus is one of the config's named sets: what fills it, which
// rules match it, and how many elements each family's set holds now.
type SetStatus struct {
	Name string `json:"name"`
	// Kind: "domains" (a resolver fills it) or "file" (flowpin does).
	Kind    string   `json:"kind"`
	Resolve bool     `json:"resolve,omitempty"`
	Domains []string `json:"domains,omitempty"`
	Files   []string `json:"files,omitempty"`
	// Rules match it in src_set or dst_set.
	Rules []string `json:"rules"`
	// Elements: addresses (a file set: ranges, merged) per family; -1
	// when the set is missing from the kernel.
	Elements4 int `json:"elements_ipv4"`
	Elements6 int `json:"elements_ipv6"`
	// NFTSets are the names in table inet flowpin (IPv4, IPv6): what
	// dnsmasq's nftset= and `nft list set` name.
	NFTSets [2]string `json:"nft_sets"`
}

// SetCounter counts the elements of the table's sets (nft.Conn).
type SetCounter interface {
	SetCounts(names []string) (map[string]int, error)
}

// SetTable is the config's sets with their element counts.
func SetTable(c *config.Config, sc SetCounter) ([]SetStatus, error) {
	if len(c.Sets) == 0 {
		return nil, nil
	}
	var names []string
	for _, s := range c.Sets {
		names = append(names, nft.SetName(s.Name, false), nft.SetName(s.Name, true))
	}
	counts, err := sc.SetCounts(names)
	if err != nil {
		return nil, err
	}
	var out []SetStatus
	for _, s := range c.Sets {
		ss := SetStatus{Name: s.Name, Kind: "file", Resolve: s.Resolve, Domains: s.Domains, Files: s.Files, Rules: []string{},
			NFTSets: [2]string{nft.SetName(s.Name, false), nft.SetName(s.Name, true)}}
		if s.Domain() {
			ss.Kind = "domains"
		}
		for _, r := range c.Rules {
			if r.SrcSet == s.Name || r.DstSet == s.Name {
				ss.Rules = append(ss.Rules, r.Name)
			}
		}
		ss.Elements4, ss.Elements6 = -1, -1
		if n, ok := counts[ss.NFTSets[0]]; ok {
			ss.Elements4 = n
		}
		if n, ok := counts[ss.NFTSets[1]]; ok {
			ss.Elements6 = n
		}
		out = append(out, ss)
	}
	return out, nil
}

// addSets fills s.Sets when the table's reader can count set elements.
func addSets(s *Status, c *config.Config, n NFT) error {
	sc, ok := n.(SetCounter)
	if !ok || len(c.Sets) == 0 {
		return nil
	}
	sets, err := SetTable(c, sc)
	if err != nil {
		return err
	}
	s.Sets = sets
	for _, ss := range sets {
		if len(ss.Rules) == 0 {
			s.Warnings = append(s.Warnings, fmt.Sprintf("set %s is used by no rule", ss.Name))
		}
		if ss.Elements4 < 0 || ss.Elements6 < 0 {
			s.Warnings = append(s.Warnings, fmt.Sprintf("set %s is missing from table inet flowpin: apply the config", ss.Name))
		}
	}
	return nil
}

// WriteSets is the SET table of `flowpin status`.
func WriteSets(w io.Writer, s *Status) error {
	if len(s.Sets) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SET\tFILLED BY\tRULES\tIPV4\tIPV6")
	count := func(n int) string {
		if n < 0 {
			return "missing"
		}
		return fmt.Sprint(n)
	}
	for _, ss := range s.Sets {
		by := "file " + strings.Join(ss.Files, " ")
		switch {
		case ss.Kind == "domains" && ss.Resolve:
			by = "flowpin run: " + strings.Join(ss.Domains, " ")
		case ss.Kind == "domains":
			by = "resolver: " + strings.Join(ss.Domains, " ")
		case len(ss.Files) == 0:
			by = "addresses"
		}
		rules := strings.Join(ss.Rules, " ")
		if rules == "" {
			rules = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", Printable(ss.Name), Printable(by), Printable(rules), count(ss.Elements4), count(ss.Elements6))
	}
	return tw.Flush()
}
