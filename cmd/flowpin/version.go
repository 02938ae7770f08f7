package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"flowpin/lb/version"
)

// stampVersion gives the root command --version.
func stampVersion(root *cobra.Command) {
	root.Version = version.Get().String()
	root.SetVersionTemplate("flowpin {{.Version}}\n")
}

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this build",
		Long: `Print the version (git describe of the commit it was built from), the
commit, whether the tree had uncommitted changes, and the Go release and
platform of this build. Nothing is read from the kernel or the config.`,
		Example: "  flowpin version\n  flowpin version --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := version.Get()
			if !asJSON {
				fmt.Fprintln(a.out, "flowpin", in)
				return nil
			}
			enc := json.NewEncoder(a.out)
			enc.SetIndent("", "  ")
			return enc.Encode(in)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON: version, commit, modified, go_version, platform")
	return cmd
}
