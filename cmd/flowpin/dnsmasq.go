package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"flowpin/lb/config"
	"flowpin/lb/plan"
)

func (a *app) dnsmasqCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dnsmasq",
		Short: "Print the dnsmasq lines that fill the config's domain sets",
		Long: `Print one nftset= line per domain set of the config: dnsmasq (2.87 or
later) then adds every address it resolves for the set's names and their
subdomains to flowpin's IPv4 and IPv6 sets. Write them to a file dnsmasq
reads and restart dnsmasq. It needs no privileges, reads no kernel state
and no set files (only the domain sets matter to dnsmasq).`,
		Example: "  flowpin dnsmasq -c /etc/flowpin/flowpin.yaml > /etc/dnsmasq.d/flowpin.conf",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.LoadWithoutSetFiles(a.config)
			if err != nil {
				return err
			}
			for _, l := range plan.DnsmasqLines(c) {
				fmt.Fprintln(a.out, l)
			}
			return nil
		},
	}
}
