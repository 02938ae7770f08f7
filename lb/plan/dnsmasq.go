package plan

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"flowpin/lb/config"
	"flowpin/nft"
)

// dnsmasqMaxLine is the longest config line dnsmasq takes (2.90: a longer
// one is a "bad option").
const dnsmasqMaxLine = 1024

// DnsmasqLines are the dnsmasq config lines (nftset=, dnsmasq 2.87 and
// later) that make dnsmasq add every address it resolves for a domain
// set's names, and their subdomains, to the set: its IPv4 answers to the
// IPv4 set, its IPv6 answers to the IPv6 set. dnsmasq adds an address when
// an answer comes from upstream, not from its cache.
func DnsmasqLines(c *config.Config) []string {
	path := c.Path
	if strings.ContainsFunc(path, unicode.IsControl) {
		// dnsmasq reads this as config: a line break in the path would
		// start a directive of its own.
		path = strconv.Quote(path)
	}
	out := []string{
		fmt.Sprintf("# Written by `flowpin dnsmasq -c %s`. Restart dnsmasq after changing", path),
		"# this file, and after `flowpin down` (its cached answers are not added again).",
	}
	n := 0
	for _, s := range c.Sets {
		if !s.Domain() {
			continue
		}
		n++
		out = append(out, fmt.Sprintf("# set %s", s.Name))
		tail := fmt.Sprintf("/4#inet#%s#%s,6#inet#%s#%s", nft.TableName, nft.SetName(s.Name, false), nft.TableName, nft.SetName(s.Name, true))
		// dnsmasq refuses a line longer than 1024 characters, and then
		// does not start: the names are spread over lines of the same
		// sets, each within that (a name is at most 253).
		line := "nftset="
		for _, d := range s.Domains {
			if len(line) > len("nftset=") && len(line)+1+len(d)+len(tail) > dnsmasqMaxLine {
				out = append(out, line+tail)
				line = "nftset="
			}
			line += "/" + d
		}
		out = append(out, line+tail)
	}
	if n == 0 {
		out = append(out, "# no set with domains in the config")
	}
	return out
}
