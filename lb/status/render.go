package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteStatus renders s as the table `flowpin status` prints. With rates
// (a --watch frame after the first) it adds per-second columns.
func WriteStatus(w io.Writer, s *Status) error {
	withRates := s.Interval > 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "LINK\tINTERFACE\tGATEWAY\tWEIGHT\tMARK\tSTATE\tFLOWS\tSHARE\tBY WEIGHT\tBYTES OUT\tBYTES IN\tPKTS OUT\tPKTS IN"
	if withRates {
		head += "\tOUT/s\tIN/s"
	}
	fmt.Fprintln(tw, head)
	for _, l := range s.Links {
		share, want := "-", "-"
		if s.pinned() > 0 {
			share = pct(l.FlowShare)
		}
		if l.InMultipath {
			want = pct(l.WeightShare)
		} else {
			want = "not in route"
		}
		state := string(l.State)
		if l.State6 != "" && l.State6 != l.State {
			state += " (IPv6 " + string(l.State6) + ")"
		}
		state += operatorState(l)
		row := fmt.Sprintf("%s\t%s\t%s\t%d\t%#x\t%s\t%d\t%s\t%s\t%s", Printable(l.Name), Printable(l.Interface), Printable(gatewayCell(l)), l.Weight, l.Mark, Printable(state), l.Flows, share, want, counterCells(l.Counters))
		if withRates {
			if l.Rate != nil {
				row += fmt.Sprintf("\t%s/s\t%s/s", HumanBytes(uint64(l.Rate.BytesOutPerSec)), HumanBytes(uint64(l.Rate.BytesInPerSec)))
			} else {
				row += "\t-\t-"
			}
		}
		fmt.Fprintln(tw, row)
	}
	fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t%d\t-\t-\t%s\n", UnpinnedLink, s.Unpinned.Flows, counterCells(s.Unpinned))
	for _, m := range s.OtherMarks {
		fmt.Fprintf(tw, "mark %#x\t-\t-\t-\t%#x\t-\t%d\t-\t-\t%s\n", m.Mark, m.Mark, m.Flows, counterCells(m.Counters))
	}
	fmt.Fprintf(tw, "total\t\t\t\t\t\t%d\t\t\t%s\n", s.Total.Flows, counterCells(s.Total))
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := WritePolicies(w, s); err != nil {
		return err
	}
	if err := writePrefixes6(w, s); err != nil {
		return err
	}
	if err := writeDNS(w, s); err != nil {
		return err
	}
	if err := WriteSets(w, s); err != nil {
		return err
	}
	writeHA(w, s.HA)
	if !s.Daemon {
		fmt.Fprintln(w, "state unknown: no flowpin daemon is tracking link health")
	} else {
		for _, l := range s.Links {
			if l.StateSince == nil {
				continue
			}
			line := fmt.Sprintf("%s: %s", Printable(l.Name), Printable(l.Reason))
			// An operator's mode names its own time ("drained by operator
			// since 10:32:05"), which is not the state's: a drained link
			// has been up since long before.
			if !strings.Contains(l.Reason, " since ") {
				line += " since " + l.StateSince.Format("15:04:05")
			}
			if l.Reason6 != "" && l.State6 != l.State {
				line += "; IPv6: " + Printable(l.Reason6)
			}
			if l.FlowsKept != "" {
				line += "; flows kept: " + Printable(l.FlowsKept)
			}
			if l.FlowsKept6 != "" && l.FlowsKept6 != l.FlowsKept {
				line += "; IPv6 flows kept: " + Printable(l.FlowsKept6)
			}
			if l.RTTMillis != nil && l.Loss != nil {
				line += "; " + quality(l)
			}
			fmt.Fprintln(w, line)
		}
	}
	if s.BytesFrom == BytesFromRules {
		fmt.Fprintln(w, "flows counted by the daemon; bytes and packets: each link's traffic counted by flowpin's nft rules")
	}
	if n := s.Total.FlowsWithoutCounters; n > 0 {
		fmt.Fprintf(w, "%d flows have no byte counters (they began while nf_conntrack_acct was off)\n", n)
	}
	for _, msg := range s.Warnings {
		fmt.Fprintln(w, "warning:", Printable(msg))
	}
	for _, l := range s.Links {
		if line := quotaLine(l); line != "" {
			fmt.Fprintln(w, line)
		}
		if l.QuotaWarning != "" {
			fmt.Fprintln(w, "warning:", Printable(l.QuotaWarning))
		}
	}
	return nil
}

// gatewayCell is the GATEWAY column: the address, and for "gateway: auto"
// the address found in the link's table or that there is none yet.
func gatewayCell(l LinkStatus) string {
	switch {
	case !l.GatewayAuto:
		return l.Gateway
	case l.Gateway == "":
		return "auto (none yet)"
	}
	return l.Gateway + " (auto)"
}

func (s *Status) pinned() int64 {
	var n int64
	for _, l := range s.Links {
		n += l.Flows
	}
	return n
}

func counterCells(c Counters) string {
	return fmt.Sprintf("%s\t%s\t%d\t%d", HumanBytes(c.BytesOut), HumanBytes(c.BytesIn), c.PacketsOut, c.PacketsIn)
}

// quality is the probes' view of a link: "rtt 12.3 ms, jitter 0.8 ms,
// loss 10.0% over 10 rounds".
func quality(l LinkStatus) string {
	out := fmt.Sprintf("rtt %.2f ms", *l.RTTMillis)
	if l.JitterMillis != nil {
		out += fmt.Sprintf(", jitter %.2f ms", *l.JitterMillis)
	}
	out += ", loss " + pct(*l.Loss)
	if l.Window > 0 {
		out += fmt.Sprintf(" over %d rounds", l.Window)
	}
	return out
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// HumanBytes renders n in binary units ("1.5 MiB").
func HumanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// WriteFlows renders a flow listing.
func WriteFlows(w io.Writer, fl *FlowList) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tSOURCE\tDESTINATION\tNAT SOURCE\tLINK\tAGE\tBYTES OUT\tBYTES IN")
	for _, f := range fl.Flows {
		nat := "-"
		if f.NATSrc != nil {
			nat = *f.NATSrc
		}
		dst := f.Dst
		if f.NATDst != nil {
			dst += " -> " + *f.NATDst
		}
		age := "-"
		if f.AgeSeconds != nil {
			age = (time.Duration(*f.AgeSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", Printable(f.Proto), Printable(f.Src), Printable(dst), Printable(nat), Printable(f.Link), age, HumanBytes(f.BytesOut), HumanBytes(f.BytesIn))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	what := "flows"
	if fl.Matched == 1 {
		what = "flow"
	}
	fmt.Fprintf(w, "%d of %d %s, largest first by bytes\n", len(fl.Flows), fl.Matched, what)
	if len(fl.Flows) > 0 && fl.Flows[0].AgeSeconds == nil {
		fmt.Fprintln(w, "age unknown: net.netfilter.nf_conntrack_timestamp is off (ages exist only for flows that start after it is set)")
	}
	return nil
}
