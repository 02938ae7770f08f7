// Command flowpin pins every connection to the uplink it started on and
// spreads new ones over the uplinks by weight. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/diagnose"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

func main() {
	if err := newRoot(os.Stdout, os.Stderr).Execute(); err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "flowpin:", oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps an error to one line for boot logs; rollback errors
// joined with errors.Join are separated by "; ".
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

type app struct {
	config string
	out    io.Writer
	log    *slog.Logger
}

func newRoot(out, errOut io.Writer) *cobra.Command {
	a := &app{out: out, log: slog.New(slog.NewTextHandler(errOut, nil))}
	root := &cobra.Command{
		Use:   "flowpin",
		Short: "Pin each connection to its uplink; spread new ones by weight",
		Long: `flowpin sets up the Linux kernel for a host with more than one uplink:
one routing table per link, fwmark and source ip rules, an nftables table
that saves each flow's link in its conntrack mark and restores it, a
weighted multipath route for new flows, and NAT per link.

Every command acts on the network namespace it runs in, so
"ip netns exec NS flowpin apply" works.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&a.config, "config", "c", config.DefaultPath, "config file")
	root.AddCommand(a.applyCmd(), a.planCmd(), a.downCmd(), a.runCmd(), a.statusCmd(), a.verifyCmd(), a.explainCmd(), a.useCmd(), a.reloadCmd(), a.linkCmd(), a.dnsmasqCmd())
	root.AddCommand(a.versionCmd(), genDocsCmd())
	stampVersion(root)
	return root
}

// kernel is the concrete adapters on the namespace the command runs in,
// handed to lb's packages.
type kernel struct {
	routes *rules.Kernel
	nft    *nft.Conn
	ct     *ct.Conntrack
	*apply.Kernel
}

func openKernel() (*kernel, error) {
	rk, err := rules.Open()
	if err != nil {
		return nil, err
	}
	conn, err := ct.Open(0)
	if err != nil {
		rk.Close()
		return nil, err
	}
	nc := &nft.Conn{}
	ak := apply.New(rk, nc)
	ak.Flows = conn
	return &kernel{routes: rk, nft: nc, ct: conn, Kernel: ak}, nil
}

func (k *kernel) Close() {
	k.routes.Close()
	_ = k.ct.Close()
}

func (k *kernel) diagnose() *diagnose.Kernel {
	return &diagnose.Kernel{Routes: k.routes, NFT: k.nft, CT: k.ct, SyncDaemons: func() ([]int, error) { return ct.SyncDaemons("/proc") }}
}

func (a *app) open() (*kernel, error) {
	if err := apply.CheckPrivileges(); err != nil {
		return nil, err
	}
	return openKernel()
}

// openWithConfig checks privileges first (without them the config may not
// be readable either, and "run it as root" is the useful answer), then
// loads the config, then opens the kernel handles.
func (a *app) openWithConfig() (*kernel, *config.Config, error) {
	if err := apply.CheckPrivileges(); err != nil {
		return nil, nil, err
	}
	c, err := config.Load(a.config)
	if err != nil {
		return nil, nil, err
	}
	k, err := openKernel()
	if err != nil {
		return nil, nil, err
	}
	if c, err = config.Resolve(c, k.Kernel); err != nil {
		k.Close()
		return nil, nil, err
	}
	return k, c, nil
}

func (a *app) prepare() (*kernel, *plan.Desired, error) {
	k, c, err := a.openWithConfig()
	if err != nil {
		return nil, nil, err
	}
	d, err := k.Prepare(c)
	if err != nil {
		k.Close()
		return nil, nil, err
	}
	for _, w := range d.Warnings {
		a.log.Warn(w)
	}
	return k, d, nil
}

// printCommands shows, with -v, each change made as the command that
// does the same by hand.
func (a *app) printCommands(verbose bool, res *apply.Result) {
	if !verbose || res == nil {
		return
	}
	for _, c := range res.Commands {
		fmt.Fprintln(a.out, c)
	}
}

func (a *app) applyCmd() *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Make the kernel match the config",
		Long: `Make the kernel match the config, changing only the difference.

A second apply with the same config writes nothing. Established connections
stay on their links when weights or links change. If any step fails, the
steps before it are undone and the kernel is as it was.

Two applies at once run one after the other (the second waits up to 30s).
While "flowpin run" manages the network namespace, apply refuses and writes
nothing: change the daemon's config and restart it instead.`,
		Example: "  flowpin apply -c /etc/flowpin/flowpin.yaml\n  ip netns exec router flowpin apply -c router.yaml -v",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lock, err := lockWriter("apply")
			if err != nil {
				return err
			}
			defer lock.Release()
			k, d, err := a.prepare()
			if err != nil {
				return err
			}
			defer k.Close()
			res, err := k.Apply(d)
			if err != nil {
				return fmt.Errorf("apply failed, nothing changed: %w", err)
			}
			for _, w := range res.Warnings[len(d.Warnings):] {
				a.log.Warn(w)
			}
			a.printCommands(verbose, res)
			fmt.Fprintln(a.out, apply.Summary(d, res.Writes))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print each change as the equivalent command")
	return cmd
}

func (a *app) planCmd() *cobra.Command {
	var full bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print what apply would change, as ip/nft/sysctl commands",
		Long: `Print what apply would change, without changing anything, as the
equivalent ip rule / ip route / sysctl / nft commands, in the order apply
runs them. With --full, print the whole desired state as a script for an
empty namespace, to review or to paste by hand; its nft script also
replaces a table that is there as apply would.`,
		Example: "  flowpin plan -c /etc/flowpin/flowpin.yaml\n  flowpin plan --full -c flowpin.yaml > flowpin.sh",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, d, err := a.prepare()
			if err != nil {
				return err
			}
			defer k.Close()
			var lines []string
			if full {
				// The table's script turns whatever table is there into
				// the plan's, as apply does; the rest is for an empty
				// namespace.
				table, err := k.TableScript(d)
				if err != nil {
					return err
				}
				lines = plan.FullScriptWith(d, table)
			} else if lines, err = k.Changes(d); err != nil {
				return err
			}
			if len(lines) == 0 {
				fmt.Fprintln(a.out, "# nothing to change")
				return nil
			}
			for _, l := range lines {
				fmt.Fprintln(a.out, l)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&full, "full", false, "print the whole state, not just the difference")
	return cmd
}

func (a *app) downCmd() *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove exactly what flowpin added",
		Long: `Remove every ip rule and route flowpin added (they carry protocol 201),
its nftables table, and put back the sysctls it changed. State flowpin does
not own is never touched. Nothing left to remove is not an error. The config
is not needed: what to remove is found by its tags. While "flowpin run"
manages the network namespace, down refuses: stop the daemon first.`,
		Example: "  flowpin down\n  ip netns exec router flowpin down -v",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lock, err := lockWriter("down")
			if err != nil {
				return err
			}
			defer lock.Release()
			k, err := a.open()
			if err != nil {
				return err
			}
			defer k.Close()
			res, err := k.Down()
			a.printCommands(verbose, res)
			if err != nil {
				return fmt.Errorf("down: %w", err)
			}
			fmt.Fprintf(a.out, "down: %d kernel writes\n", res.Writes)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print each change as the equivalent command")
	return cmd
}
