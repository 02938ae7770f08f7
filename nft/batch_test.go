package nft

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batchRefs is what one batch, as sent to the kernel, creates, deletes
// and refers to, by name.
type batchRefs struct {
	chains, delChains map[string]bool // NEWCHAIN, DELCHAIN
	sets, delSets     map[string]bool // NEWSET, DELSET
	jumps             []string        // jump/goto targets: rules' verdicts and map elements'
	lookups           []string        // sets named by lookup and dynset expressions
	elems             int             // set elements added
	longest           int             // the longest message, in bytes
}

// captureBatch queues on a recording socket what queue adds and decodes
// the netlink messages the library marshals: the batch exactly as it
// would reach the kernel.
func captureBatch(t *testing.T, queue func(*nftables.Conn) error) batchRefs {
	t.Helper()
	b := batchRefs{chains: map[string]bool{}, delChains: map[string]bool{}, sets: map[string]bool{}, delSets: map[string]bool{}}
	var msgs []mdnetlink.Message
	nc, err := nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
		msgs = append(msgs, req...)
		return nil, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := queue(nc); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		b.longest = max(b.longest, unix.NLMSG_HDRLEN+len(m.Data))
		if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
			continue // batch begin and end
		}
		ad := decoder(t, m.Data[4:]) // after struct nfgenmsg
		switch uint16(m.Header.Type) & 0xff {
		case unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN:
			for ad.Next() {
				if ad.Type() == unix.NFTA_CHAIN_NAME {
					if uint16(m.Header.Type)&0xff == unix.NFT_MSG_NEWCHAIN {
						b.chains[ad.String()] = true
					} else {
						b.delChains[ad.String()] = true
					}
				}
			}
		case unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET:
			for ad.Next() {
				if ad.Type() == unix.NFTA_SET_NAME {
					if uint16(m.Header.Type)&0xff == unix.NFT_MSG_NEWSET {
						b.sets[ad.String()] = true
					} else {
						b.delSets[ad.String()] = true
					}
				}
			}
		case unix.NFT_MSG_NEWRULE:
			for ad.Next() {
				if ad.Type() == unix.NFTA_RULE_EXPRESSIONS {
					ad.Nested(func(list *mdnetlink.AttributeDecoder) error {
						for list.Next() {
							list.Nested(func(e *mdnetlink.AttributeDecoder) error {
								b.expr(t, e)
								return nil
							})
						}
						return nil
					})
				}
			}
		case unix.NFT_MSG_NEWSETELEM:
			for ad.Next() {
				if ad.Type() == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
					ad.Nested(func(list *mdnetlink.AttributeDecoder) error {
						for list.Next() {
							b.elems++
							list.Nested(func(el *mdnetlink.AttributeDecoder) error {
								for el.Next() {
									if el.Type() == unix.NFTA_SET_ELEM_DATA {
										el.Nested(b.data)
									}
								}
								return nil
							})
						}
						return nil
					})
				}
			}
		}
		if err := ad.Err(); err != nil {
			t.Fatalf("decode message type %#x: %v", m.Header.Type, err)
		}
	}
	return b
}

func decoder(t *testing.T, b []byte) *mdnetlink.AttributeDecoder {
	t.Helper()
	ad, err := mdnetlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	return ad
}

// expr notes what one expression (NFTA_LIST_ELEM of a rule) refers to.
func (b *batchRefs) expr(t *testing.T, e *mdnetlink.AttributeDecoder) {
	name := ""
	var data []byte
	for e.Next() {
		switch e.Type() {
		case unix.NFTA_EXPR_NAME:
			name = e.String()
		case unix.NFTA_EXPR_DATA:
			data = e.Bytes()
		}
	}
	ad := decoder(t, data)
	for ad.Next() {
		switch {
		case name == "immediate" && ad.Type() == unix.NFTA_IMMEDIATE_DATA:
			ad.Nested(b.data)
		case name == "lookup" && ad.Type() == unix.NFTA_LOOKUP_SET,
			name == "dynset" && ad.Type() == unix.NFTA_DYNSET_SET_NAME:
			b.lookups = append(b.lookups, ad.String())
		}
	}
}

// data notes the chain of a verdict (struct nft_data).
func (b *batchRefs) data(d *mdnetlink.AttributeDecoder) error {
	for d.Next() {
		if d.Type() == unix.NFTA_DATA_VERDICT {
			d.Nested(func(v *mdnetlink.AttributeDecoder) error {
				for v.Next() {
					if v.Type() == unix.NFTA_VERDICT_CHAIN {
						b.jumps = append(b.jumps, v.String())
					}
				}
				return nil
			})
		}
	}
	return nil
}

// dangling lists what the batch refers to that will not exist once it is
// committed on top of cur: the kernel refuses the whole batch for one.
func (b batchRefs) dangling(cur *Current) []string {
	var out []string
	for _, j := range b.jumps {
		if !b.chains[j] || b.delChains[j] {
			out = append(out, "jump/goto "+j)
		}
	}
	for _, l := range b.lookups {
		kept := slices.Contains(cur.Sets, l) && !b.delSets[l]
		if !b.sets[l] && !kept {
			out = append(out, "set "+l)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// randomSpec draws a table: links, some down (no sticky links), traffic
// rules of every kind that may overlap, sticky or not, an unmatched
// policy or none, a bypass mark or none.
func randomSpec(r *rand.Rand) Spec {
	s := Spec{Mask: 0xff00, V6: r.IntN(2) == 0}
	names := []string{"isp1", "isp2", "lte"}
	for i := range 1 + r.IntN(3) {
		s.Links = append(s.Links, Link{Name: names[i], Iface: fmt.Sprintf("wan%d", i+1), Mark: uint32(i+1) << 8, NAT: r.IntN(2) == 0})
	}
	// Often two links on one interface (two modems behind one switch),
	// told apart by next hop and by MAC, some not resolved yet.
	if len(s.Links) > 1 && r.IntN(2) == 0 {
		for i := range s.Links[:2] {
			l := &s.Links[i]
			l.Iface, l.Shared = "wan1", true
			if r.IntN(3) > 0 {
				l.Nexthop = netip.AddrFrom4([4]byte{192, 168, 1, byte(1 + i)})
			}
			if r.IntN(2) == 0 {
				l.Nexthop6 = netip.MustParseAddr(fmt.Sprintf("fe80::%d", 1+i))
			}
			if r.IntN(3) > 0 {
				l.MACs = []string{fmt.Sprintf("02:00:00:00:00:%02x", 1+i)}
			}
		}
	}
	someLinks := func() []string {
		var out []string
		for _, l := range s.Links {
			if r.IntN(3) == 0 { // often none: every link of the tier down
				out = append(out, l.Name)
			}
		}
		return out
	}
	prefixes := []string{"10.0.0.0/8", "10.1.0.0/16", "192.168.1.0/24", "2001:db8::/32", "fd00::/8", "203.0.113.7/32"}
	for i := range r.IntN(8) {
		c := Class{Name: fmt.Sprintf("r%d", i), Action: Action{Mark: 0xff00 - uint32(i)<<8}}
		switch r.IntN(4) {
		case 0:
			c.Proto = "tcp"
			c.DstPorts = []PortRange{{uint16(1000 + r.IntN(10)), uint16(1010 + r.IntN(10))}}
		case 1:
			c.Proto = "udp"
		case 2:
			c.Proto = "icmp"
		}
		for range r.IntN(3) {
			c.Dst = append(c.Dst, netip.MustParsePrefix(prefixes[r.IntN(len(prefixes))]))
		}
		if r.IntN(3) == 0 {
			c.IIF = "lan0"
		}
		if r.IntN(2) == 0 {
			c.Label = 1 + r.IntN(4)
		}
		if r.IntN(2) == 0 {
			c.Sticky = time.Duration(1+r.IntN(20)) * time.Minute
			c.StickyLinks, c.StickyLinks6 = someLinks(), someLinks()
		}
		s.Classes = append(s.Classes, c)
	}
	if r.IntN(2) == 0 {
		s.Unmatched = Action{Mark: 0x8000, Label: r.IntN(3)}
	}
	if r.IntN(3) == 0 {
		s.Bypass = 0x7f00
	}
	return s
}

var nftRef = regexp.MustCompile(`\b(?:jump|goto) ([A-Za-z0-9_.-]+)`)

// Every chain a batch jumps to (from a rule or a verdict map) and every
// set it looks up is created or kept by that same batch, for many tables,
// written on no table and on top of another: a dangling name makes the
// kernel refuse the whole transaction, and with it every later change of
// the table (a sticky rule whose links are all down did that). The same
// holds for the script Render writes.
func TestBatchRefersOnlyToWhatItHas(t *testing.T) {
	r := rand.New(rand.NewPCG(18, 1))
	specs := []Spec{policySpec()}
	// The case that broke: a sticky rule with no link up to stick to.
	stuck := policySpec()
	stuck.Classes[1].StickyLinks, stuck.Classes[1].StickyLinks6 = nil, nil
	specs = append(specs, stuck, Spec{Mask: 0xff00, Unmatched: Action{Mark: 0x100}})
	for range 400 {
		specs = append(specs, randomSpec(r))
	}
	for i, s := range specs {
		prev := &Current{Chains: map[string][]string{}}
		if i > 0 {
			prev = specs[i-1].Current()
		}
		for _, cur := range []*Current{{Chains: map[string][]string{}}, prev} {
			b := captureBatch(t, func(nc *nftables.Conn) error { return s.layout().queue(nc, cur) })
			if d := b.dangling(cur); len(d) > 0 {
				t.Fatalf("spec %d (table before: %v): the batch refers to what it does not have: %v\n%s", i, cur.Exists, d, s.Render())
			}
			if i < 3 && len(b.jumps) == 0 && len(s.Classes) > 0 {
				t.Fatalf("spec %d: no jump decoded from the batch: the decoder is broken", i)
			}
		}
		script := s.Render()
		for _, m := range nftRef.FindAllStringSubmatch(script, -1) {
			if !strings.Contains(script, "\tchain "+m[1]+" {") {
				t.Fatalf("spec %d: Render jumps to chain %s, which it does not declare:\n%s", i, m[1], script)
			}
		}
	}
}

// Every classification element reaches the kernel, for tables up to the
// largest a config allows. A netlink attribute's length is 16 bits: with
// all of a map's elements in one message, the library wrapped the length
// of a list longer than 64 KiB and the kernel took only the first few
// hundred elements, without an error: 287 of 1000 disjoint rules' (the
// rules after them never matched), or 87 of one rule's 800 destinations
// (a batch small enough to be sent).
func TestBatchCarriesEveryElement(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"one rule with 800 destinations", oneRuleManyDsts(800)},
		{"1000 disjoint rules", manyRules(1000, false)},
		{"1000 overlapping rules", manyRules(1000, true)},
		{"the largest table", largest()},
	} {
		l := tc.spec.layout()
		b := captureBatch(t, func(nc *nftables.Conn) error { return l.queue(nc, &Current{Chains: map[string][]string{}}) })
		t.Logf("%s: %d elements, longest message %d bytes", tc.name, b.elems, b.longest)
		want := tc.spec.ClassElements()
		for _, d := range tc.spec.linkMaps() {
			want += len(d.elems) // the links' maps
		}
		for _, d := range tc.spec.stickySets() {
			want += len(d.elems) // the links each sticky rule may stick to
		}
		if b.elems != want {
			t.Errorf("%s: the batch carries %d set elements, want %d", tc.name, b.elems, want)
		}
		if b.longest > math.MaxUint16 {
			t.Errorf("%s: a message of %d bytes: some attribute in it is longer than netlink can say", tc.name, b.longest)
		}
	}
}

// oneRuleManyDsts is one rule with n destination /24s: n elements in one
// map, in a batch far below the default send buffer.
func oneRuleManyDsts(n int) Spec {
	c := Class{Name: "block", Action: Action{Mark: 0xfe00}}
	for i := range n {
		c.Dst = append(c.Dst, netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", i/250, i%250)))
	}
	return Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100}}, Classes: []Class{c}}
}
