package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"flowpin/lb/config"
	"flowpin/lb/ctl"
	"flowpin/lb/daemon"
	"flowpin/lb/daemon/operator"
	"flowpin/lb/daemon/resolve"
	"flowpin/lb/daemon/setfiles"
	"flowpin/lb/health"
	"flowpin/lb/status"
	"flowpin/nft"
	"flowpin/rules"
)

func (a *app) runCmd() *cobra.Command {
	var metricsAddr, logFormat, operatorState, quotaState, resolvDir string
	var web daemon.WebOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run as a daemon: keep the config applied, fail over dead links",
		Long: `Apply the config, then keep the kernel matching it and route around dead
links, in the foreground.

- Drift (ip rule flush, a firewall reload, NetworkManager) is repaired within
  a second, on netlink and nftables notifications; the kernel is also
  re-read every 30s, and at once if notifications were lost.
- Each link is probed with ICMP echo out of that link (bound to its device,
  carrying its mark), in parallel. fall bad rounds take it down, rise good
  rounds bring it back; carrier loss, a removed interface (a PPP session
  ending) or a failed gateway neighbour takes it down at once. An interface
  that does not exist yet is a down link, adopted when it appears.
- A link whose own new flows suddenly go unanswered (SYN without SYN-ACK,
  UDP without reply), well above its baseline and the other links', is
  probed at once in a burst; no answer takes it down without waiting for
  fall rounds. The traffic only triggers the check; the probes decide.
- A link going down leaves the multipath route and only its own conntrack
  entries are deleted, so its NATed flows re-establish on a live link.
  A link coming back rejoins the route; no flow on a healthy link moves.
  With no other link up to take them (the probe target itself stopped
  answering, so every link is judged down), no flow is deleted: they go
  on when the links are back, and flowpin status says so.
- check.method exec runs the operator's command per round (exit 0 is an
  answer; killed with its process group at the timeout); arp asks for the
  gateway's link-layer address (ARP, or NDP for IPv6) on the link.
- With links[].dns, the servers of the links that are up are written to
  /run/flowpin/resolv.conf (--resolv-dir) at start and on every change,
  for dnsmasq's resolv-file=, and each server's queries leave by its link.
- Under systemd with WatchdogSec=, the control loop itself pings the
  watchdog: a wedged loop stops the pings and systemd restarts the daemon.
- "gateway: auto" follows the interface's default route in main (DHCP, PPP).
- flowpin status shows each link's state, the last change and why.
- Flows per link are counted in memory from conntrack events, after one
  streamed dump at start, and re-counted every minute and at once when the
  kernel drops events; bytes and packets per link come from the counters
  of the link's nft rules. flowpin status and the metrics answer from
  there, without reading the conntrack table. The nft counters are
  carried over rewrites of the table, so they never go backwards.
- SIGHUP (systemctl reload, flowpin reload) re-reads the config and
  applies the difference; a broken config is refused and the old one runs
  on (see flowpin reload --help).
- With --metrics ADDR it serves Prometheus metrics at /metrics, and a
  read-only status page at / (each link's state, flows, throughput, rtt and
  loss graphs, the policies' active tiers; it refreshes itself) with its
  data at /status.json, the JSON of flowpin status --json.
  /metrics answers every client that reaches ADDR, as Prometheus expects.
  The page and /status.json answer whom the status socket answers: root
  and members of group flowpin on this host (the kernel names the user
  behind a local connection); other users and other hosts get 403, unless
  --public-status opens them to every client.
  Every request must name the listener in its Host header: the address
  connected to, localhost, 127.0.0.1 or [::1], with ADDR's port, or a
  --metrics-host name; others get 421, so a web page reaching the port
  through DNS rebinding reads nothing. A scrape by IP works as is; a
  scrape by DNS name needs --metrics-host NAME.
  The listener serves 16 connections, at most 4 per client (a local user,
  or an address), 4 more for root, each closed 40s after it opened: no
  one holding or trickling on connections takes the port from the others.
- On SIGTERM or SIGINT it exits 0 and leaves routing as last applied;
  flowpin down removes it. A restart adopts the kernel's state and moves
  no flow.`,
		Example: "  flowpin run -c /etc/flowpin/flowpin.yaml --metrics :9108\n" +
			"  flowpin run -c /etc/flowpin/flowpin.yaml --metrics 10.0.0.1:9108 --metrics-host router.lan\n" +
			"  ip netns exec router flowpin run -c router.yaml --log-format json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logFormat)
			if err != nil {
				return err
			}
			if metricsAddr == "" && (len(web.Hosts) > 0 || web.PublicStatus) {
				return errors.New("--metrics-host and --public-status need --metrics")
			}
			if err := web.Check(); err != nil {
				return err
			}
			k, c, err := a.openWithConfig()
			if err != nil {
				return err
			}
			defer k.Close()
			lock, err := lockDaemon()
			if err != nil {
				return err
			}
			defer lock.Release()
			ln, err := daemon.ListenAPI()
			if err != nil {
				return err
			}
			defer ln.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// The stamps of the set files as the last Load read them: a
			// set file watcher starts from them (startSetParts).
			var readMu sync.Mutex
			lastRead := setfiles.Stamps(c)
			load := func() (*config.Config, error) {
				c, err := config.LoadResolved(a.config, k.Kernel)
				if err == nil {
					readMu.Lock()
					lastRead = setfiles.Stamps(c)
					readMu.Unlock()
				}
				return c, err
			}
			stamps := func() map[string]string {
				readMu.Lock()
				defer readMu.Unlock()
				return lastRead
			}
			ops, quotas, err := openStates(operatorState, quotaState, log)
			if err != nil {
				return err
			}
			// WatchdogSec= in the unit: pings from the daemon's loop
			// (Deps.Watchdog).
			var watchdog func()
			wdTimeout, err := sddaemon.SdWatchdogEnabled(false)
			if err != nil {
				return fmt.Errorf("systemd watchdog: %w", err)
			}
			wdEvery := time.Duration(0)
			if wdTimeout > 0 {
				watchdog = watchdogPing()
				var short bool
				wdEvery, short = daemon.WatchdogPing(wdTimeout)
				if short {
					log.Warn("systemd watchdog: WatchdogSec is under a second, shorter than a sync may take; 30s is a safe value", "watchdog", wdTimeout)
				}
				log.Info("systemd watchdog", "ping_every", wdEvery)
			}
			sup := daemon.NewSupervisor(daemon.Deps{
				ResolvDir:        resolvDir,
				Watchdog:         watchdog,
				WatchdogInterval: wdEvery,
				Applier:          daemon.KernelApplier(k.Kernel),
				Conntrack:        k.ct,
				Events:           daemon.KernelEvents{Routing: rules.Events{Log: log}, Table: nft.TableEvents{}},
				Flows:            k.ct,
				Traffic:          k.nft,
				RuleHits:         k.nft,
				Operator:         ops,
				Quota:            quotas,
			}, load, log)
			first := true
			stopSetParts := func() {}
			var resolver resolve.Keeper
			sup.OnReady = func(d *daemon.Daemon) {
				if first {
					first = false
					log.Info("running", "config", a.config, "links", len(d.Config.Links))
				}
				stopSetParts()
				stopSetParts = startSetParts(ctx, d.Config, stamps(), &resolver, sup, log)
				_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
			}
			// SIGHUP (systemctl reload) reloads the config; the outcome
			// is logged.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyReloading)
						_ = sup.Reload()
						_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
					}
				}
			}()
			go func() {
				if err := daemon.ServeAPI(ctx, ln, supervisedAPI{sup}, rules.SocketOwners{}); err != nil {
					log.Error("status socket", "err", err)
				}
			}()
			if metricsAddr != "" {
				addr, err := metricsListenAddr(metricsAddr)
				if err != nil {
					return err
				}
				web.ListenHost, _, _ = net.SplitHostPort(addr)
				mln, err := net.Listen("tcp", addr)
				if err != nil {
					return fmt.Errorf("metrics: %w", err)
				}
				sup.Setup = func(d *daemon.Daemon) error {
					// The daemon's hits, carried over the table's rewrites.
					if err := d.Metrics().RegisterRuleMetrics(d.Config, d); err != nil {
						return fmt.Errorf("metrics: %w", err)
					}
					if err := d.Metrics().RegisterSetMetrics(d.Config, d.SetCounter(&nft.Conn{})); err != nil {
						return fmt.Errorf("metrics: %w", err)
					}
					return nil
				}
				// The registry of the daemon that runs now: a reload's
				// daemon takes over its predecessor's, counters and all.
				metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					d := sup.Current()
					if d == nil {
						http.Error(w, "starting", http.StatusServiceUnavailable)
						return
					}
					promhttp.HandlerFor(d.Metrics().Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
				})
				go func() {
					if err := daemon.ServeWeb(ctx, mln, metrics, supervisedAPI{sup}, web, rules.SocketOwners{}); err != nil {
						log.Error("metrics", "err", err)
					}
				}()
				log.Info("metrics", "addr", mln.Addr().String(), "status_page", "http://"+mln.Addr().String()+"/",
					"hosts", web.Hosts, "public_status", web.PublicStatus)
			}
			return sup.Run(ctx, c)
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics (/metrics), a status page (/) and its JSON (/status.json) on ADDR (\":9108\" binds localhost only; give a host to bind another)")
	cmd.Flags().StringSliceVar(&web.Hosts, "metrics-host", nil, "also answer requests whose Host header is NAME (any port) or NAME:PORT, e.g. the name Prometheus scrapes or a proxy forwards (repeatable, or comma-separated); others get 421")
	cmd.Flags().BoolVar(&web.PublicStatus, "public-status", false, "serve the status page and /status.json to every client that reaches --metrics, not only to root and group flowpin on this host")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&operatorState, "operator-state", "", "keep the links' operator modes (flowpin link) in FILE (default "+ctl.SocketDir+"/<network namespace>.operator.json: they survive a restart, not a reboot)")
	cmd.Flags().StringVar(&quotaState, "quota-state", defaultQuotaState, "keep the links' quota counts in FILE (it survives reboots; give each daemon on a host its own)")
	cmd.Flags().StringVar(&resolvDir, "resolv-dir", "/run/flowpin", "write the links' DNS servers (links[].dns) to DIR/resolv.conf")
	return cmd
}

// startSetParts starts the daemon's parts of the config's sets, each
// config anew: the set file watcher and the resolver of resolve: true.
func startSetParts(runCtx context.Context, c *config.Config, stamps map[string]string, resolver *resolve.Keeper, sup *daemon.Supervisor, log *slog.Logger) func() {
	ctx, cancel := context.WithCancel(runCtx)
	go func() {
		if err := setfiles.WatchSince(ctx, setfiles.FilesOf(c), stamps, sup.Reload, log); err != nil {
			log.Error("set file watcher", "err", err)
		}
	}()
	// The resolver outlives a reload that keeps its sets (resolve.Keeper).
	sets := resolve.SetsOf(c)
	if len(sets) > 0 {
		r, err := resolve.FromResolvConf("/etc/resolv.conf")
		if err != nil {
			log.Error("resolve: true sets stay empty", "err", err)
		} else {
			// A Conn of its own: Conn counts its writes unlocked.
			resolver.Keep(runCtx, sets, r.Servers, func(ctx context.Context) { resolve.Run(ctx, sets, r, &nft.Conn{}, log, resolve.RealClock) })
			return cancel
		}
	}
	resolver.Keep(runCtx, nil, nil, nil)
	return cancel
}

// supervisedAPI answers the status socket from the daemon that runs now.
type supervisedAPI struct{ sup *daemon.Supervisor }

func (s supervisedAPI) Health() []health.LinkHealth {
	if d := s.sup.Current(); d != nil {
		return d.Health()
	}
	return nil
}

func (s supervisedAPI) Status() (*status.Status, error) {
	d := s.sup.Current()
	if d == nil {
		return nil, errors.New("the daemon is starting")
	}
	return daemonStatus(d.Config, d)
}

func (s supervisedAPI) Intent() (ctl.Intent, bool) {
	if d := s.sup.Current(); d != nil {
		return d.Intent()
	}
	return ctl.Intent{}, false
}

func (s supervisedAPI) Reload() error { return s.sup.Reload() }

func (s supervisedAPI) SetLink(ctx context.Context, name string, m operator.Mode, force bool) (operator.Entry, error) {
	return s.sup.SetLink(ctx, name, m, force)
}

// metricsListenAddr binds localhost when the address names no host.
func metricsListenAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--metrics %q: %w", s, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, errors.New("--log-format: want text or json, not " + format)
}

func (a *app) reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the running daemon re-read its config",
		Long: `Ask "flowpin run" in this network namespace to re-read its config file
(the one it was started with; -c is not used), as SIGHUP does, and print
the outcome. The change is applied as a difference: flows pinned to links
that remain are untouched, the flows of a removed link are deleted so they
reconnect elsewhere, and new weights, traffic rules and policies apply to
new flows at once. Links that remain keep their health.

A config that does not load (or does not fit the interfaces) is refused:
the daemon keeps running on the old one, the kernel is unchanged, and
reload prints the error (file, line, field, value) and exits 1.
Root only.`,
		Example: "  flowpin reload\n  systemctl reload flowpin",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			if err := (ctl.Client{}).Reload(ctx); err != nil {
				if errors.Is(err, ctl.ErrNoDaemon) {
					return errors.New("reload: no flowpin run in this network namespace")
				}
				return fmt.Errorf("reload refused: %w", err)
			}
			fmt.Fprintln(a.out, "reloaded")
			return nil
		},
	}
}
