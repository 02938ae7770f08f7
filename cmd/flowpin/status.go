package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/ctl"
	"flowpin/lb/daemon"
	"flowpin/lb/health"
	"flowpin/lb/status"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// intervalValue is the --watch flag: a Go duration ("500ms", "2s") or a
// number of seconds ("2"), like watch(1).
type intervalValue struct{ d *time.Duration }

func (v intervalValue) String() string {
	if v.d == nil || *v.d == 0 {
		return ""
	}
	return v.d.String()
}

func (v intervalValue) Set(s string) error {
	d, err := parseInterval(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (v intervalValue) Type() string { return "interval" }

func parseInterval(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return 0, fmt.Errorf("%q is not an interval (e.g. 2s, 500ms, 2)", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 100*time.Millisecond {
		return 0, fmt.Errorf("interval %v is too short: at least 100ms (each frame dumps the whole conntrack table)", d)
	}
	return d, nil
}

const defaultWatch = 2 * time.Second

func (a *app) statusCmd() *cobra.Command {
	var (
		asJSON bool
		flows  bool
		link   string
		limit  int
		watch  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [--watch [INTERVAL]]",
		Short: "Show flows, bytes and packets per link, from conntrack",
		Long: `Show, per link, how many flows are pinned to it, their share against the
share the weights give it, and bytes and packets in each direction, then the
flows without a flowpin mark ("unpinned") and the totals. Counts come from
one streamed dump of the kernel's conntrack table, grouped by the link marks
flowpin puts in each flow's conntrack mark.

"Out" is conntrack's original direction (from whoever opened the flow: on a
NAT box, upload); "in" is the reply direction. Byte and packet counters
exist only for flows that began after net.netfilter.nf_conntrack_acct was
set, which apply does. A link's state is "unknown" until a flowpin daemon
tracks health. Below the table: the policies and traffic rules, each
link's IPv6 prefixes (translated now or not) and DNS servers (whether the
daemon's resolv file lists them), the sets with their elements, and with a
daemon each link's last change, probe quality, operator mode and quota.

--flows lists the flows themselves, largest first by bytes, with the source
the far end sees after NAT. --watch redraws the table in place every
INTERVAL (default 2s) with per-second rates.

When a flowpin daemon runs in this network namespace, flowpin status asks it
(its config, not -c): it keeps the flow counts in memory, so the answer
does not wait for a dump of the table, and bytes and packets are each
link's traffic as the counters of its nft rules have it, carried over
rewrites of the table while the daemon runs. Otherwise, reading conntrack
and the routing state needs CAP_NET_ADMIN; root and members of group
flowpin may ask the daemon.
--flows always reads the table itself and needs CAP_NET_ADMIN.

Exits non-zero when flowpin was never applied in this network namespace.`,
		Example: `  flowpin status -c /etc/flowpin/flowpin.yaml
  flowpin status --json | jq '.links[] | {name, flows, flow_share, weight_share}'
  flowpin status --flows --link isp1 --limit 20
  flowpin status --watch 1s
  ip netns exec router flowpin status -c router.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			// "--watch 5s": pflag cannot give an optional value after a
			// space, so the interval arrives as an argument.
			if len(args) == 0 {
				return nil
			}
			if len(args) == 1 && cmd.Flags().Changed("watch") {
				d, err := parseInterval(args[0])
				if err != nil {
					return err
				}
				watch = d
				return nil
			}
			return fmt.Errorf("unexpected arguments %q", args)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit %d: must be 0 (no limit) or more", limit)
			}
			if !flows && (link != "" || cmd.Flags().Changed("limit")) {
				return fmt.Errorf("--link and --limit go with --flows")
			}
			if err := apply.CheckPrivileges(); err != nil {
				if flows {
					return fmt.Errorf("--flows reads conntrack itself: %w", err)
				}
				// Unprivileged: the daemon computes the status.
				return statusView{fromDaemon: true}.show(cmd.Context(), a.out, watch, asJSON)
			}
			if !flows {
				// A daemon keeps the counts in memory: asking it costs
				// O(links), a dump O(flows).
				if _, err := (ctl.Client{}).Health(cmd.Context()); err == nil {
					return statusView{fromDaemon: true}.show(cmd.Context(), a.out, watch, asJSON)
				}
			}
			k, err := openKernel()
			if err != nil {
				return err
			}
			defer k.Close()
			// Not applied is the first thing to say, before any complaint
			// about the config file.
			if _, err := status.ReadApplied(k.routes, k.nft); err != nil {
				return err
			}
			// Without the set files: status shows what the kernel holds,
			// and counts the sets' elements there. A set file with a bad
			// line (or none where it should be) is when the operator most
			// needs to see what is applied.
			c, err := config.LoadWithoutSetFiles(a.config)
			if err == nil {
				c, err = config.Resolve(c, k.Kernel)
			}
			if err != nil {
				return err
			}
			v := statusView{k: k, c: c, flows: flows, query: status.FlowQuery{Link: link, Limit: limit}}
			return v.show(cmd.Context(), a.out, watch, asJSON)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON (schema in README.md); with --watch, one object per line")
	f.BoolVar(&flows, "flows", false, "list the flows themselves, largest first by bytes")
	f.StringVar(&link, "link", "", `with --flows: only this link's flows ("unpinned" for flows without a mark)`)
	f.IntVar(&limit, "limit", 100, "with --flows: show at most this many (0: all)")
	f.Var(intervalValue{&watch}, "watch", "redraw every INTERVAL (default 2s) until interrupted")
	f.Lookup("watch").NoOptDefVal = defaultWatch.String()
	return cmd
}

// statusView produces one frame of whichever view was asked for.
type statusView struct {
	k     *kernel
	c     *config.Config
	flows bool
	query status.FlowQuery
	// fromDaemon: without CAP_NET_ADMIN, the daemon's status.
	fromDaemon bool
}

// show prints one frame, or keeps printing them with --watch.
func (v statusView) show(ctx context.Context, out io.Writer, watch time.Duration, asJSON bool) error {
	if watch > 0 {
		return v.watch(ctx, out, watch, asJSON)
	}
	fr, err := v.frame(nil)
	if err != nil {
		return err
	}
	return fr.print(out, asJSON)
}

type frame struct {
	status *status.Status
	flows  *status.FlowList
}

func (f frame) data() any {
	if f.flows != nil {
		return f.flows
	}
	return f.status
}

func (f frame) print(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(f.data())
	}
	return f.text(w)
}

func (f frame) text(w io.Writer) error {
	if f.flows != nil {
		return status.WriteFlows(w, f.flows)
	}
	return status.WriteStatus(w, f.status)
}

func (v statusView) frame(prev *status.Status) (frame, error) {
	if v.fromDaemon {
		st, err := ctl.Client{}.Status(context.Background())
		if errors.Is(err, ctl.ErrNoDaemon) {
			return frame{}, errors.New("without CAP_NET_ADMIN, flowpin status asks the flowpin daemon, and none runs in this network namespace: run flowpin status as root to read the kernel directly")
		}
		if err != nil {
			return frame{}, err
		}
		if prev != nil && !st.Time.After(prev.Time) {
			// The daemon's status is shared for up to a second: the
			// same one again, with the rates it already has.
			return frame{status: prev}, nil
		}
		st.SetRates(prev)
		return frame{status: st}, nil
	}
	// Each frame re-reads what is applied: a `flowpin down` or a
	// re-apply during --watch shows up. The daemon of this namespace, if
	// one runs, knows each link's health.
	src := status.Sources{Kernel: v.k.status(), Health: ctl.Client{}}
	if v.flows {
		fl, err := status.CollectFlows(v.c, src, v.query)
		return frame{flows: fl}, err
	}
	st, err := status.Collect(context.Background(), v.c, src)
	if err != nil {
		return frame{}, err
	}
	st.SetRates(prev)
	return frame{status: st}, nil
}

func (k *kernel) status() status.Kernel {
	return status.Kernel{Routes: k.routes, NFT: k.nft, CT: k.ct, Ifaces: k.routes}
}

// Terminal control (VT100/xterm, what every terminal emulator speaks): the
// alternate screen keeps the user's scrollback clean, and each frame
// overwrites the previous one from the top-left corner.
const (
	enterScreen = "\x1b[?1049h\x1b[?25l" // alternate screen, hide cursor
	leaveScreen = "\x1b[?25h\x1b[?1049l"
	home        = "\x1b[H"
	clearLine   = "\x1b[K" // to the end of the line
	clearBelow  = "\x1b[J" // to the end of the screen
)

// watch redraws the view every interval until interrupted. On a terminal
// it redraws in place; into a pipe or file it writes one frame after
// another, and with --json one object per line.
func (v statusView) watch(ctx context.Context, out io.Writer, every time.Duration, asJSON bool) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ttyFd := -1
	if f, ok := out.(*os.File); ok && !asJSON && term.IsTerminal(int(f.Fd())) {
		ttyFd = int(f.Fd())
		fmt.Fprint(out, enterScreen)
		defer fmt.Fprint(out, leaveScreen)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var prev *status.Status
	for {
		fr, err := v.frame(prev)
		var buf bytes.Buffer
		switch {
		case asJSON && err != nil:
			return err
		case asJSON:
			if err := json.NewEncoder(&buf).Encode(fr.data()); err != nil {
				return err
			}
		default:
			fmt.Fprintf(&buf, "flowpin status, every %v, %s (Ctrl-C to quit)\n\n", every, time.Now().Format("15:04:05"))
			if err != nil {
				// Keep watching: the table may come back (a re-apply).
				fmt.Fprintf(&buf, "error: %v\n", err)
			} else if err := fr.text(&buf); err != nil {
				return err
			}
		}
		if fr.status != nil {
			prev = fr.status
		}
		if ttyFd >= 0 {
			if _, err := io.WriteString(out, redraw(buf.String(), ttyFd)); err != nil {
				return err
			}
		} else {
			if !asJSON {
				buf.WriteString("\n")
			}
			if _, err := out.Write(buf.Bytes()); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// redraw turns a frame into one write that overwrites the screen: each line
// cut to the terminal's width (a wrapped line would scroll the frame) and
// cleared to its end, the rows below the frame cleared.
func redraw(frame string, fd int) string {
	width, height, err := term.GetSize(fd)
	if err != nil {
		width, height = 0, 0
	}
	var b strings.Builder
	b.WriteString(home)
	sc := bufio.NewScanner(strings.NewReader(frame))
	for row := 0; sc.Scan(); row++ {
		if height > 0 && row >= height-1 {
			break
		}
		line := sc.Text()
		if width > 0 && len(line) > width {
			line = line[:width]
		}
		b.WriteString(line)
		b.WriteString(clearLine)
		b.WriteString("\n")
	}
	b.WriteString(clearBelow)
	return b.String()
}

// daemonStatus is what the daemon serves on its socket and at
// /status.json: the status `flowpin status` shows, with the daemon's
// health, and the counts from the daemon's memory (O(links)); until the
// daemon has counted the table once, from a dump. It opens netlink handles
// of its own: the daemon's belong to its loop.
func daemonStatus(c *config.Config, d *daemon.Daemon) (*status.Status, error) {
	rk, err := rules.Open()
	if err != nil {
		return nil, err
	}
	defer rk.Close()
	// Sockets open on first use: the table is dumped only until the
	// daemon has counted it once.
	conn := &ct.Conntrack{}
	defer conn.Close()
	return status.Collect(context.Background(), c, status.Sources{
		Kernel: status.Kernel{Routes: rk, NFT: &nft.Conn{}, CT: conn, Ifaces: rk},
		Counts: d,
		Health: liveHealth{d},
		// The daemon's hits, carried over rewrites of the table.
		Hits: d,
	})
}

// liveHealth is the health the daemon tracks.
type liveHealth struct{ d *daemon.Daemon }

func (h liveHealth) Health(context.Context) ([]health.LinkHealth, error) { return h.d.Health(), nil }
