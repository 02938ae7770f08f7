package status

import (
	"context"
	"errors"
	"fmt"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/nft/ct"
)

// Conntrack is what status reads of the conntrack table: streamed dumps,
// of disjoint parts in parallel (ct.Conntrack).
type Conntrack interface {
	WalkParallel(parts []*ct.MarkFilter, d ct.Detail, fn func(part int, rec *ct.FlowRecord)) error
}

// NFT is what status reads of flowpin's nft table: the table, and the
// traffic rules' counters; and of the ruleset, its flowtables.
type NFT interface {
	Tables
	HitReader
	// Flowtables lists the ruleset's flowtables ("family table name").
	Flowtables() ([]string, error)
}

// Kernel is what Collect reads of the kernel.
type Kernel struct {
	Routes Routing
	NFT    NFT
	// CT is dumped only when no daemon's counts are at hand.
	CT Conntrack
	// Ifaces, if set, says where the links' nat_source addresses are
	// (an HA pair's role).
	Ifaces Interfaces
}

// FlowCounts are the flow counts a daemon keeps in memory.
type FlowCounts interface {
	// FlowTally is the flows per mark, with each link's bytes and packets
	// from the counters of its nft rules; ErrCountsNotReady until the
	// daemon has counted the table once.
	FlowTally() (Tally, error)
}

// LinkHealth is a daemon's view of the links (ctl.Client asks it over
// the socket).
type LinkHealth interface {
	// Health is each link's health; ErrNoDaemon when no daemon runs.
	Health(ctx context.Context) ([]health.LinkHealth, error)
}

var (
	// ErrCountsNotReady: a daemon has no flow counts yet (it just started,
	// or does not follow conntrack).
	ErrCountsNotReady = errors.New("the daemon's flow counts are not ready yet")
	// ErrNoDaemon: no daemon tracks the links' health; their states are
	// unknown.
	ErrNoDaemon = errors.New("no flowpin daemon runs in this network namespace")
)

// Sources are where Collect reads the status from.
type Sources struct {
	Kernel Kernel
	// Counts, if set, spare the dump of the conntrack table once ready:
	// O(links) instead of O(flows).
	Counts FlowCounts
	// Health, if set, gives each link's state.
	Health LinkHealth
	// Hits, if set, are the traffic rules' counters in place of the nft
	// table's (Kernel.NFT): a daemon's, carried over rewrites of the
	// table.
	Hits HitReader
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

func (s Sources) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Collect is the whole status, as `flowpin status`, the daemon's socket,
// its /status.json and its status page show it: what is applied, the
// flows per link (from a daemon's counts when ready, else one dump of the
// conntrack table), the policies and rules, and each link's health when
// a daemon tracks it. ErrNotApplied when flowpin is not applied.
func Collect(ctx context.Context, c *config.Config, src Sources) (*Status, error) {
	ap, err := ReadApplied(src.Kernel.Routes, src.Kernel.NFT)
	if err != nil {
		return nil, err
	}
	var st *Status
	if src.Counts != nil {
		t, err := src.Counts.FlowTally()
		switch {
		case err == nil:
			st = BuildStatus(c, ap, t, src.now())
			st.BytesFrom = BytesFromRules
		case !errors.Is(err, ErrCountsNotReady):
			return nil, err
		}
	}
	if st == nil {
		t, err := TallyFlows(src.Kernel.CT, c)
		if err != nil {
			return nil, err
		}
		st = BuildStatus(c, ap, t, src.now())
	}
	fts, err := src.Kernel.NFT.Flowtables()
	if err != nil {
		return nil, err
	}
	st.Warnings = append(st.Warnings, flowtableWarnings(fts)...)
	var hits HitReader = src.Kernel.NFT
	if src.Hits != nil {
		hits = src.Hits
	}
	if err := AddPolicies(st, c, ap, hits); err != nil {
		return nil, err
	}
	if err := addSets(st, c, src.Kernel.NFT); err != nil {
		return nil, err
	}
	if err := AddHA(st, c, src.Kernel.Ifaces); err != nil {
		return nil, err
	}
	if src.Health != nil {
		h, err := src.Health.Health(ctx)
		switch {
		case err == nil:
			st.WithHealth(h)
		case !errors.Is(err, ErrNoDaemon):
			st.Warnings = append(st.Warnings, err.Error())
		}
	}
	return st, nil
}

// flowtableWarnings tell the user what a flowtable means for status: an
// offloaded flow's packets bypass the nft hooks, flowpin's counters among
// them (README, "Flow offload").
func flowtableWarnings(fts []string) []string {
	var out []string
	for _, ft := range fts {
		out = append(out, fmt.Sprintf("flowtable %s: flows it offloads keep their link, but their packets skip nft, so the links' bytes and packets here miss them (conntrack's per-flow counters see them only with the flowtable's flags counter)", ft))
	}
	return out
}

// CollectFlows lists the flows q selects, largest first, as `flowpin
// status --flows` shows them; ErrNotApplied when flowpin is not applied.
func CollectFlows(c *config.Config, src Sources, q FlowQuery) (*FlowList, error) {
	if _, err := ReadApplied(src.Kernel.Routes, src.Kernel.NFT); err != nil {
		return nil, err
	}
	return ListFlows(c, src.Kernel.CT, q, src.now())
}
