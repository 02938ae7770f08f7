package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"flowpin/lb/ctl"
	"flowpin/lb/diagnose"
	"flowpin/lb/status"
)

func (a *app) verifyCmd() *cobra.Command {
	var (
		asJSON  bool
		probe   string
		noProbe bool
		peer    string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that the kernel routes as the config says; exit 0 only if it does",
		Long: `Compare the kernel with what the config asks for, and ask the kernel how it
routes (ip route get, with source, mark and ports), as one would by hand:

  - flowpin's ip rules, routes and nft table are present and as planned
    (drift in plan's words: "missing: ip rule add ...");
  - for each usable link: traffic from its address and traffic with its mark
    leave by it, and its gateway answers (neighbour entry, or one UDP packet
    to the gateway's discard port to make the kernel resolve it, then up to
    1.5 s for the ARP answer; up to 16 gateways are checked at once, so 64
    silent gateways take about 6 s);
  - the wildcard source is routable and new flows reach every usable link;
  - sysctls: multipath hash, rp_filter per link, ARP where links share a subnet;
  - no foreign ip rule before flowpin's catches its traffic, and no foreign
    nft rule writes the mark bits flowpin owns;
  - with ha: true, this node's side of the pair: marks and tables from the
    config alone, the guard rule, SNAT to the VIPs, and its role (whether
    it holds the VIPs); with --peer URL (the peer's flowpin run --metrics
    ADDR --public-status, reached over the sync link), the peer's marks,
    tables and role too: the same layout, and exactly one node holding the
    VIPs.

Beside a running flowpin run, verify checks against the daemon's plan: a
link its checks, an operator (flowpin link) or a quota took out of the
multipath routes is no drift, and the fix is flowpin reload.

One line per check, with the reason and the fix. Nothing is changed.`,
		Example: "  flowpin verify -c /etc/flowpin/flowpin.yaml\n  ip netns exec router flowpin verify -c router.yaml --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := diagnose.VerifyOptions{NoProbe: noProbe}
			if peer != "" {
				// A typo is one line and exit 1, before any check runs.
				if _, err := peerURL(peer); err != nil {
					return err
				}
				o.Peer = func() (*status.Status, error) { return peerStatus(peer) }
			}
			if probe != "" {
				var err error
				if o.Probe, err = netip.ParseAddr(probe); err != nil {
					return fmt.Errorf("--to %q: not an IP address", probe)
				}
			}
			k, c, err := a.openWithConfig()
			if err != nil {
				return err
			}
			defer k.Close()
			o.Daemon = daemonIntent(cmd.Context(), cmd.ErrOrStderr())
			rep, err := k.diagnose().Verify(c, o)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			if asJSON {
				out := struct {
					OK     bool                   `json:"ok"`
					Failed int                    `json:"failed"`
					Checks []diagnose.VerifyCheck `json:"checks"`
				}{rep.Failed() == 0, rep.Failed(), rep.Checks}
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				for _, ch := range rep.Checks {
					status := "ok  "
					switch {
					case ch.Skip:
						status = "skip"
					case !ch.OK:
						status = "FAIL"
					}
					fmt.Fprintf(a.out, "%s %s: %s\n", status, ch.Name, ch.Detail)
					if !ch.OK && !ch.Skip && ch.Fix != "" {
						fmt.Fprintf(a.out, "     fix: %s\n", ch.Fix)
					}
				}
			}
			if n := rep.Failed(); n > 0 {
				return fmt.Errorf("verify: %d of %d checks failed", n, len(rep.Checks))
			}
			if !asJSON {
				fmt.Fprintf(a.out, "verify: all %d checks passed\n", len(rep.Checks))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	cmd.Flags().StringVar(&probe, "to", "", "destination for the route lookups (default "+diagnose.DefaultProbe.String()+"; nothing is sent to it)")
	cmd.Flags().BoolVar(&noProbe, "no-probe", false, "never send a packet to a gateway that has no neighbour entry")
	cmd.Flags().StringVar(&peer, "peer", "", "with ha: true, the URL of the HA peer's status listener (http://ADDR:PORT of its flowpin run --metrics ADDR:PORT --public-status), to compare the pair")
	return cmd
}

// peerURL is the URL of the peer's /status.json: base is its listener
// (http://ADDR:PORT, with or without a path prefix) or the document itself.
// Anything else is refused before a packet is sent: an empty host would
// have Go resolve "status.json" by DNS.
func peerURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--peer %q: %v", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--peer %q: give the peer's status listener as http://ADDR:PORT", base)
	}
	if !strings.HasSuffix(u.Path, "/status.json") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/status.json"
	}
	return u.String(), nil
}

// peerClient reads the peer directly: it is on the sync link, so never
// through the environment's proxy, and a redirect (the peer's, or
// whatever answers on its address) is an answer, not somewhere to go.
func peerClient() *http.Client {
	return &http.Client{
		Timeout:       3 * time.Second,
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// peerStatus reads the HA peer's /status.json at base (http://ADDR:PORT).
func peerStatus(base string) (*status.Status, error) {
	where, err := peerURL(base)
	if err != nil {
		return nil, err
	}
	resp, err := peerClient().Get(where)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", where, resp.Status)
	}
	var st status.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return &st, nil
}

func (a *app) explainCmd() *cobra.Command {
	var (
		asJSON           bool
		from, iif, proto string
		mark             string
		sport, dport     uint16
	)
	cmd := &cobra.Command{
		Use:   "explain [flags] DST",
		Short: "Show the path a packet to DST takes: nft, ip rule, table, route, link, NAT",
		Long: `Show, step by step, what happens to one packet: flowpin's nft restore/save
decision (from the config and the flow's conntrack entry, if it has one),
which ip rule matched, which table and route, which nexthop (for a new flow,
the one the multipath hash picks for this exact 5-tuple), and the source it
leaves with after NAT.

Every routing answer is the kernel's own (ip route get with the packet's
source, input interface, mark, protocol and ports). Without --iif the packet
is one this host sends; with --iif it is forwarded, which needs
net.ipv4.ip_forward=1 in this namespace.`,
		Example: `  flowpin explain --iif lan --from 10.0.0.2 --proto tcp --sport 40000 --dport 443 203.0.113.10
  ip netns exec server flowpin explain --from 10.88.0.11 203.0.113.20`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := diagnose.Packet{Iif: iif, Sport: sport, Dport: dport}
			var err error
			if p.Dst, err = netip.ParseAddr(args[0]); err != nil {
				return fmt.Errorf("destination %q: not an IP address", args[0])
			}
			if from != "" {
				if p.Src, err = netip.ParseAddr(from); err != nil {
					return fmt.Errorf("--from %q: not an IP address", from)
				}
			}
			if mark != "" {
				m, err := strconv.ParseUint(mark, 0, 32)
				if err != nil {
					return fmt.Errorf("--mark %q: not a 32-bit number", mark)
				}
				p.Mark = uint32(m)
			}
			switch strings.ToLower(proto) {
			case "":
			case "tcp":
				p.Proto = unix.IPPROTO_TCP
			case "udp":
				p.Proto = unix.IPPROTO_UDP
			default:
				return fmt.Errorf("--proto %q: tcp or udp", proto)
			}
			if (sport != 0 || dport != 0) && p.Proto == 0 {
				return fmt.Errorf("--sport/--dport need --proto tcp or udp")
			}
			k, c, err := a.openWithConfig()
			if err != nil {
				return err
			}
			defer k.Close()
			e, err := k.diagnose().Explain(c, p)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					*diagnose.Explanation
					Summary string `json:"summary"`
				}{e, e.Summary()}); err != nil {
					return err
				}
			} else {
				for _, s := range e.Steps {
					fmt.Fprintf(a.out, "%-16s %s\n", s.Stage+":", s.Text)
				}
				for _, n := range e.Notes {
					fmt.Fprintf(a.out, "%-16s %s\n", "note:", n)
				}
				fmt.Fprintf(a.out, "=> %s\n", e.Summary())
			}
			if e.Error != "" {
				return fmt.Errorf("explain: the kernel would not route this packet")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the explanation as JSON")
	f.StringVar(&from, "from", "", "source address")
	f.StringVar(&iif, "iif", "", "interface the packet arrives on (forwarded); empty: sent by this host")
	f.StringVar(&mark, "mark", "", "packet mark before flowpin's chains (e.g. 0x10)")
	f.StringVar(&proto, "proto", "", "tcp or udp")
	f.Uint16Var(&sport, "sport", 0, "source port")
	f.Uint16Var(&dport, "dport", 0, "destination port")
	return cmd
}

// daemonIntent asks the daemon of this network namespace what it last
// applied beyond the config, so that verify plans as it does: nil when
// none runs. A daemon that cannot answer (starting, or not this user's
// to ask) is said on errw, and verify checks against the config alone.
func daemonIntent(ctx context.Context, errw io.Writer) *diagnose.DaemonIntent {
	in, err := ctl.Client{}.Intent(ctx)
	switch {
	case errors.Is(err, ctl.ErrNoDaemon):
		return nil
	case err != nil:
		fmt.Fprintf(errw, "flowpin: verify: flowpin run did not say what it applied (%v): checking against the config alone\n", err)
		return nil
	}
	// The reasons are the daemon's words, printed as they are: escaped.
	clean := func(m map[string]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			out[k] = status.Printable(v)
		}
		return out
	}
	return &diagnose.DaemonIntent{Down: clean(in.Down), Down6: clean(in.Down6), Held6: in.Held6}
}
