package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"flowpin/lb/ctl"
	"flowpin/lb/daemon/operator"
	"flowpin/lb/daemon/quota"
	"flowpin/lb/nslock"
	"flowpin/lb/status"
)

// defaultQuotaState is where the daemon keeps its quota counts: /var/lib
// survives reboots, as a monthly count must.
const defaultQuotaState = "/var/lib/flowpin/quota.json"

// openStates opens the operator modes' and the quota counts' files. A
// file that does not parse is set aside and logged; the daemon starts.
func openStates(opPath, quotaPath string, log *slog.Logger) (*operator.Store, *quota.Book, error) {
	if opPath == "" {
		id, err := nslock.ID()
		if err != nil {
			return nil, nil, err
		}
		opPath = filepath.Join(ctl.SocketDir, id+".operator.json")
	}
	netns, err := nslock.Cookie()
	if err != nil {
		log.Warn("operator modes: no network namespace cookie; a file of another namespace is not told apart", "err", err)
	}
	ops, err := operator.OpenIn(opPath, netns)
	if err != nil {
		log.Error("operator modes", "err", err)
	}
	q, err := quota.Open(quotaPath)
	if err != nil {
		log.Error("quota counts", "err", err)
	}
	return ops, q, nil
}

func (a *app) linkCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "link NAME drain|down|up|auto",
		Short: "Take a link out by hand, or put it back, through the running daemon",
		Long: `Set a link's operator mode in "flowpin run" of this network namespace and
wait until it is applied:

  drain  the link takes no new flows; its established flows stay on it
         (they keep their mark, its routes and its NAT). For maintenance:
         drain, wait until flowpin status shows its flows gone, then work.
  down   out as if it failed: its flows are deleted where another link
         can take them (so they reconnect there), the on_change hook runs
         with FLOWPIN_CAUSE=operator, and policies move to their next tier.
  up     in, whatever its probes say (for a link whose probe target is
         known broken). It also overrides an exhausted quota.
  auto   back to its health checks (and its quota).

The mode shows in flowpin status ("drained by operator since 10:32:05"),
its JSON, the status page and the metrics (flowpin_link_operator_mode). It
survives a reload and a daemon restart, not a reboot: it is kept in
/run/flowpin (flowpin run --operator-state). A reload that removes the
link forgets its mode.

drain and down of the last link of a family (IPv4, IPv6) that is up and
not drained or down by the operator are refused (new flows of that
family would have nowhere to go) unless --force.
Root only, like reload.`,
		Example: "  flowpin link isp1 drain\n  flowpin link isp1 auto\n  flowpin link lte down --force",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, mode := args[0], args[1]
			if _, err := operator.ParseMode(mode); err != nil {
				return fmt.Errorf("link: mode %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			if err := (ctl.Client{}).SetLink(ctx, name, mode, force); err != nil {
				if errors.Is(err, ctl.ErrNoDaemon) {
					return errors.New("link: no flowpin run in this network namespace")
				}
				return fmt.Errorf("link %s %s refused: %w", status.Printable(name), mode, err)
			}
			fmt.Fprintf(a.out, "link %s: %s\n", status.Printable(name), mode)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "drain or down the last link that takes new flows too")
	return cmd
}
