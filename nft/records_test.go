package nft

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// v0Records are the records of testdata/table-v0.nft: a dual-WAN table
// as flowpin before typed records (commit ccbdb55) rendered it, the links'
// marks swapped from their positional values.
var v0Records = Records{
	Sysctls: []SysctlRecord{
		{"net/ipv4/conf/wan1/rp_filter", "1"},
		{"net/ipv4/conf/wan2/rp_filter", "1"},
		{"net/ipv4/fib_multipath_hash_fields", "7"},
		{"net/ipv4/fib_multipath_hash_policy", "0"},
		{"net/ipv4/fib_multipath_use_neigh", "0"},
		{"net/netfilter/nf_conntrack_acct", "0"},
		{"net/netfilter/nf_conntrack_events", "0"},
		{"net/netfilter/nf_conntrack_timestamp", "0"},
	},
	Links: []LinkRecord{{"isp1", 0x200, 102}, {"isp2", 0x100, 101}},
}

var v0Spec = Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x200, NAT: true}, {Name: "isp2", Iface: "wan2", Mark: 0x100, NAT: true}}}

// stateComments picks the comments of the state chain out of a rendered
// table, unquoted as the kernel stores them.
func stateComments(t *testing.T, script string) []string {
	t.Helper()
	var out []string
	in := false
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "chain state {":
			in = true
		case in && line == "}":
			return out
		case in:
			q, ok := strings.CutPrefix(line, "counter comment ")
			if !ok {
				t.Fatalf("state chain: %q is not a record", line)
			}
			c, err := strconv.Unquote(q)
			if err != nil {
				t.Fatalf("state chain: %q: %v", line, err)
			}
			out = append(out, c)
		}
	}
	t.Fatal("no state chain")
	return nil
}

// A table written by the previous version decodes to its values, and the
// encoder writes those values back as the same text: an upgrade finds
// the old records, and a downgrade reads the new ones.
func TestRecordsOldFormat(t *testing.T) {
	golden, err := os.ReadFile("testdata/table-v0.nft")
	if err != nil {
		t.Fatal(err)
	}
	comments := stateComments(t, string(golden))
	got := DecodeRecords(comments)
	if diff := cmp.Diff(v0Records, got); diff != "" {
		t.Errorf("records of the old table (-want +got):\n%s", diff)
	}
	if enc := got.Encode(); !slices.Equal(enc, comments) {
		t.Errorf("encoded %q\nthe old version wrote %q", enc, comments)
	}
	s := v0Spec
	s.Records = got
	// The packet chains have changed since (verdict maps); the records
	// must not have.
	if diff := cmp.Diff(comments, stateComments(t, s.Render())); diff != "" {
		t.Errorf("the same records rendered now differ from the old ones (-old +now):\n%s", diff)
	}
	if cur := s.Current(); !cur.Records.Equal(v0Records) || !slices.Equal(cur.Chains["state"], comments) {
		t.Errorf("Current: records %+v, state chain %q", cur.Records, cur.Chains["state"])
	}
}

func TestDecodeRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want Records
	}{
		{"none", nil, Records{}},
		{"sysctl", []string{"sysctl net/ipv4/conf/wan1/rp_filter=1"}, Records{Sysctls: []SysctlRecord{{"net/ipv4/conf/wan1/rp_filter", "1"}}}},
		{"sysctl with an empty value and a value with =", []string{"sysctl a=", "sysctl b=c=d"}, Records{Sysctls: []SysctlRecord{{"a", ""}, {"b", "c=d"}}}},
		{"link", []string{"link isp-1.a mark=0xff00 table=4000000000"}, Records{Links: []LinkRecord{{"isp-1.a", 0xff00, 4000000000}}}},
		{"link in decimal, extra spaces", []string{"link  a   mark=256 table=0101"}, Records{Links: []LinkRecord{{"a", 0x100, 101}}}},
		{"interleaved, kept in order per kind", []string{"link b mark=0x200 table=102", "sysctl x=1", "link a mark=0x100 table=101", "sysctl w=0"},
			Records{Sysctls: []SysctlRecord{{"x", "1"}, {"w", "0"}}, Links: []LinkRecord{{"b", 0x200, 102}, {"a", 0x100, 101}}}},
		{"unreadable", []string{"", "sysctl no-equals", "link a mark=zz table=3", "link b mark=0x300", "link c mark=0x100000000 table=1",
			"link d mark=1 table=-1", "link e table=1 mark=1", "Sysctl a=1", "link a mark=1 table=1 extra", "foo"},
			Records{Unknown: []string{"", "sysctl no-equals", "link a mark=zz table=3", "link b mark=0x300", "link c mark=0x100000000 table=1",
				"link d mark=1 table=-1", "link e table=1 mark=1", "Sysctl a=1", "link a mark=1 table=1 extra", "foo"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DecodeRecords(tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DecodeRecords(%q) (-want +got):\n%s", tc.in, diff)
			}
			if again := DecodeRecords(got.Encode()); !again.Equal(got) {
				t.Errorf("encoded as %q, which decodes to %+v", got.Encode(), again)
			}
		})
	}
}

// Record writes the records as RenderRecords shows them, in the order of
// Encode: sysctls, links, then what could not be read.
func TestRenderRecords(t *testing.T) {
	r := Records{Sysctls: []SysctlRecord{{"a", "1"}}, Links: []LinkRecord{{"isp1", 0x100, 101}}, Unknown: []string{"from a newer flowpin"}}
	want := "add table inet flowpin\nadd chain inet flowpin state\nflush chain inet flowpin state\n" +
		"add rule inet flowpin state counter comment \"sysctl a=1\"\n" +
		"add rule inet flowpin state counter comment \"link isp1 mark=0x100 table=101\"\n" +
		"add rule inet flowpin state counter comment \"from a newer flowpin\"\n"
	if got := RenderRecords(r); got != want {
		t.Errorf("RenderRecords:\n%s\nwant:\n%s", got, want)
	}
}

// FuzzDecodeRecords: whatever the state chain holds (flowpin's records, an
// older or newer flowpin's, damaged ones), decoding never panics, keeps
// every comment (as a record or as unknown), and what it decodes encodes
// to text that decodes the same; a sysctl record encodes to exactly the
// text it was read from.
func FuzzDecodeRecords(f *testing.F) {
	golden, err := os.ReadFile("testdata/table-v0.nft")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(strings.Join(v0Records.Encode(), "\n"))
	f.Add(string(golden))
	f.Add("link a mark=0x300 table=100\nlink c mark=0x10000 table=4294967295")
	f.Add("link  mark= table=\nfoo\nlink a mark=1 table=1 extra")
	f.Add("sysctl =\nsysctl a==b\nlink a mark=0b11 table=1_0\nsysctl k=v\n")
	f.Fuzz(func(t *testing.T, in string) {
		comments := strings.Split(in, "\n")
		r := DecodeRecords(comments)
		if n := len(r.Sysctls) + len(r.Links) + len(r.Unknown); n != len(comments) {
			t.Fatalf("%d comments became %d records", len(comments), n)
		}
		enc := r.Encode()
		if again := DecodeRecords(enc); !again.Equal(r) {
			t.Fatalf("%+v encodes to %q, which decodes to %+v", r, enc, again)
		}
		var sysctls []string
		for _, c := range comments {
			if strings.HasPrefix(c, sysctlPrefix) && strings.Contains(c, "=") {
				sysctls = append(sysctls, c)
			}
		}
		if !slices.Equal(enc[:len(r.Sysctls)], sysctls) {
			t.Fatalf("sysctl records %q encode to %q", sysctls, enc[:len(r.Sysctls)])
		}
	})
}

func TestRecordsLink(t *testing.T) {
	r := Records{Links: []LinkRecord{{"a", 0x100, 101}, {"b", 0x200, 102}, {"a", 0x300, 103}}}
	if l, ok := r.Link("a"); !ok || l != (LinkRecord{"a", 0x300, 103}) {
		t.Errorf("a: %+v %v, want the later record", l, ok)
	}
	if l, ok := r.Link("b"); !ok || l.Mark != 0x200 {
		t.Errorf("b: %+v %v", l, ok)
	}
	if _, ok := r.Link("c"); ok {
		t.Error("c: found a record of a link that has none")
	}
}
