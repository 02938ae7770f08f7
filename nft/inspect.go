package nft

import (
	"fmt"
	"strings"

	"al.essio.dev/pkg/shellescape"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// MarkWriter is a rule outside flowpin's table that changes packet mark or
// conntrack mark bits.
type MarkWriter struct {
	Family string // "ip", "ip6", "inet", ...
	Table  string
	Chain  string
	Handle uint64
	// Hook and Priority of the base chain, "" for a regular chain (it runs
	// wherever it is jumped to from).
	Hook     string
	Priority int
	Comment  string
	// What: "meta mark" or "ct mark". Bits: which bits the rule may
	// change (all of them when it copies from somewhere else).
	What string
	Bits uint32
}

// Where names the rule the way `nft -a list` finds it.
func (w MarkWriter) Where() string {
	s := fmt.Sprintf("table %s %s chain %s handle %d", w.Family, w.Table, w.Chain, w.Handle)
	if w.Hook != "" {
		s += fmt.Sprintf(" (hook %s priority %d)", w.Hook, w.Priority)
	}
	if w.Comment != "" {
		s += fmt.Sprintf(" comment %q", w.Comment)
	}
	return s
}

// DeleteCommand is the nft command that removes the rule, each name one
// shell word: another program's table and chain may be named anything.
func (w MarkWriter) DeleteCommand() string {
	return shellescape.QuoteCommand([]string{"nft", "delete", "rule", w.Family, w.Table, w.Chain, "handle", fmt.Sprint(w.Handle)})
}

// ForeignMarkWriters lists every rule outside `inet flowpin` that writes a
// bit of mask into the packet mark or the conntrack mark. Such a rule
// breaks pinning: clearing the bits after flowpin's restore sends a pinned
// flow to the multipath route, and setting them moves it to another link.
func (c *Conn) ForeignMarkWriters(mask uint32) ([]MarkWriter, error) {
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	tables, err := nc.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	chains, err := nc.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	var out []MarkWriter
	for _, t := range tables {
		if t.Name == TableName && t.Family == nftables.TableFamilyINet {
			continue
		}
		for _, ch := range chains {
			if ch.Table.Name != t.Name || ch.Table.Family != t.Family {
				continue
			}
			rs, err := nc.GetRules(t, ch)
			if err != nil {
				return nil, fmt.Errorf("list rules of table %s %s chain %s: %w", familyName(t.Family), t.Name, ch.Name, err)
			}
			for _, r := range rs {
				for _, w := range markWrites(r.Exprs) {
					if w.Bits&mask == 0 {
						continue
					}
					w.Family, w.Table, w.Chain, w.Handle = familyName(t.Family), t.Name, ch.Name, r.Handle
					if ch.Hooknum != nil {
						w.Hook = hookName(*ch.Hooknum, t.Family)
						if ch.Priority != nil {
							w.Priority = int(*ch.Priority)
						}
					}
					w.Comment, _ = userdata.GetString(r.UserData, userdata.TypeComment)
					out = append(out, w)
				}
			}
		}
	}
	return out, nil
}

// regVal is what a register holds while a rule runs, as far as marks go.
type regVal struct {
	from    string // "meta mark", "ct mark", or "" (anything else)
	changed uint32 // bits that may differ from `from`
}

// markWrites finds the mark stores of one rule and which bits each may
// change, by following values through registers: a mark loaded, masked or
// xored (`meta mark set meta mark & 0xffff00ff` changes 0xff00) and stored
// back changes only those bits; anything else stored (`meta mark set 0`,
// `meta mark set ct mark`) may change them all.
func markWrites(exprs []expr.Any) []MarkWriter {
	regs := map[uint32]regVal{}
	var last uint32
	set := func(r uint32, v regVal) { regs[r] = v; last = r }
	var out []MarkWriter
	store := func(what string, src uint32) {
		v := regs[src]
		bits := ^uint32(0)
		if v.from == what {
			bits = v.changed
		}
		out = append(out, MarkWriter{What: what, Bits: bits})
	}
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				if e.Key == expr.MetaKeyMARK {
					store("meta mark", e.Register)
				}
				continue
			}
			v := regVal{}
			if e.Key == expr.MetaKeyMARK {
				v.from = "meta mark"
			}
			set(e.Register, v)
		case *expr.Ct:
			// google/nftables v0.3.0 decodes `ct ... set` without its
			// source register (NFTA_CT_SREG is dropped): a Ct without a
			// destination register is a store, from the register written
			// last.
			if e.SourceRegister || e.Register == 0 {
				if e.Key == expr.CtKeyMARK {
					src := e.Register
					if src == 0 {
						src = last
					}
					store("ct mark", src)
				}
				continue
			}
			v := regVal{}
			if e.Key == expr.CtKeyMARK {
				v.from = "ct mark"
			}
			set(e.Register, v)
		case *expr.Bitwise:
			v := regs[e.SourceRegister]
			if len(e.Mask) == 4 && len(e.Xor) == 4 {
				m := binaryutil.NativeEndian.Uint32(e.Mask)
				x := binaryutil.NativeEndian.Uint32(e.Xor)
				v.changed |= ^m | x
			} else {
				v = regVal{}
			}
			set(e.DestRegister, v)
		case *expr.Immediate:
			set(e.Register, regVal{})
		case *expr.Payload:
			if e.OperationType == expr.PayloadLoad {
				set(e.DestRegister, regVal{})
			}
		}
	}
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family %d", f)
}

func hookName(h nftables.ChainHook, f nftables.TableFamily) string {
	if f == nftables.TableFamilyNetdev {
		switch h {
		case 0:
			return "ingress"
		case 1:
			return "egress"
		}
	}
	names := []string{"prerouting", "input", "forward", "output", "postrouting"}
	if int(h) < len(names) {
		return names[h]
	}
	return strings.ToLower(fmt.Sprintf("hook %d", h))
}

// Flowtables lists every flowtable in the ruleset, any table's, as
// "family table name". A flow a flowtable offloads skips the nft hooks
// after its first packets, so flowpin's rule counters miss its bytes.
func (c *Conn) Flowtables() ([]string, error) {
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	tables, err := nc.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []string
	for _, t := range tables {
		fts, err := nc.ListFlowtables(t)
		if err != nil {
			return nil, fmt.Errorf("list flowtables of table %s %s: %w", familyName(t.Family), t.Name, err)
		}
		for _, ft := range fts {
			out = append(out, fmt.Sprintf("%s %s %s", familyName(t.Family), t.Name, ft.Name))
		}
	}
	return out, nil
}
