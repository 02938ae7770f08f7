package ct

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The testdata/dump-*.bin files are reads of a real ctnetlink dump, as
// walk receives them: a namespace with four flows (TCP and UDP, over IPv4
// and IPv6, all marked 0x200, with counters and timestamps) in one batch,
// then the batch that ends the dump.

// readDump reads a recorded batch and the sequence number it answers.
func readDump(t testing.TB, name string) ([]byte, uint32) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b, batchSeq(b)
}

// batchSeq is the sequence number of a batch's first message.
func batchSeq(b []byte) uint32 {
	if len(b) < unix.SizeofNlMsghdr {
		return 0
	}
	return binary.NativeEndian.Uint32(b[8:])
}

func TestDecodeBatchRecorded(t *testing.T) {
	b, seq := readDump(t, "dump-4flows.bin")
	var got []FlowRecord
	var rec FlowRecord
	interrupted := false
	done, err := decodeBatch(b, seq, DetailTuples, &rec, &interrupted, func(r *FlowRecord) { got = append(got, *r) })
	if done || err != nil || interrupted {
		t.Fatalf("first batch: done %v, err %v, interrupted %v", done, err, interrupted)
	}
	if len(got) != 4 {
		t.Fatalf("decoded %d flows, want 4: %+v", len(got), got)
	}
	var tcp4 *FlowRecord
	for i, r := range got {
		if r.Mark != 0x200 || !r.Counted || r.Start.IsZero() {
			t.Errorf("flow %d: mark %#x counted %v start %v, want 0x200, counters and a start time", i, r.Mark, r.Counted, r.Start)
		}
		if r.Proto == 6 && r.Family == unix.AF_INET {
			tcp4 = &got[i]
		}
	}
	// conntrack -L in the namespace, as recorded: tcp src=127.0.0.1
	// dst=127.0.0.1 sport=39874 dport=7000 packets=5 bytes=368, reply
	// packets=3 bytes=164.
	if tcp4 == nil {
		t.Fatal("no IPv4 TCP flow")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	want := FlowRecord{Family: unix.AF_INET, ID: 2529157961, Mark: 0x200, SeenReply: true, Counted: true, Orig: Counter{5, 368}, Reply: Counter{3, 164}, Proto: 6,
		OrigSrc: Endpoint{lo, 39874, true}, OrigDst: Endpoint{lo, 7000, true}, ReplySrc: Endpoint{lo, 7000, true}, ReplyDst: Endpoint{lo, 39874, true}, Start: tcp4.Start}
	if *tcp4 != want {
		t.Errorf("tcp flow\n got %+v\nwant %+v", *tcp4, want)
	}
	if time.Since(tcp4.Start) < 0 {
		t.Errorf("start %v is in the future", tcp4.Start)
	}

	// An answer to another request is skipped.
	n := 0
	if done, err := decodeBatch(b, seq+1, DetailTuples, &rec, &interrupted, func(*FlowRecord) { n++ }); done || err != nil || n != 0 {
		t.Errorf("other sequence: done %v, err %v, %d flows; want it skipped", done, err, n)
	}

	b, seq = readDump(t, "dump-done.bin")
	if done, err := decodeBatch(b, seq, DetailTuples, &rec, &interrupted, func(*FlowRecord) { n++ }); !done || err != nil || n != 0 {
		t.Errorf("last batch: done %v, err %v, %d flows; want done", done, err, n)
	}
	interrupted = true
	if _, err := decodeBatch(b, seq, DetailTuples, &rec, &interrupted, func(*FlowRecord) {}); err != ErrDumpInterrupted {
		t.Errorf("done after an interrupted part: %v, want ErrDumpInterrupted", err)
	}
}

// nlBatch frames ctnetlink flow messages (attribute bodies, after the
// nfgenmsg) the way a dump read delivers them, then NLMSG_DONE.
func nlBatch(seq uint32, family uint8, bodies ...[]byte) []byte {
	var out []byte
	msg := func(typ, flags uint16, payload []byte) {
		h := make([]byte, unix.SizeofNlMsghdr)
		binary.NativeEndian.PutUint32(h[0:], uint32(len(h)+len(payload)))
		binary.NativeEndian.PutUint16(h[4:], typ)
		binary.NativeEndian.PutUint16(h[6:], flags)
		binary.NativeEndian.PutUint32(h[8:], seq)
		out = append(out, h...)
		out = append(out, payload...)
		for len(out)%unix.NLMSG_ALIGNTO != 0 {
			out = append(out, 0)
		}
	}
	for _, b := range bodies {
		msg(uint16(unix.NFNL_SUBSYS_CTNETLINK)<<8|ipctnlMsgCtNew, unix.NLM_F_MULTI, append([]byte{family, 0, 0, 0}, b...))
	}
	msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, []byte{0, 0, 0, 0})
	return out
}

// seedFlows are flow bodies for the fuzz targets: the test messages and
// the flows of the recorded dump.
func seedFlows(f *testing.F) [][]byte {
	start := time.Unix(1700000000, 0)
	out := [][]byte{
		ctMessage{proto: 6, src: mustAP("10.77.0.2:40000"), dst: mustAP("203.0.113.10:7000"),
			rsrc: mustAP("203.0.113.10:7000"), rdst: mustAP("192.0.2.2:40001"), mark: 0x200,
			counters: true, orig: Counter{3, 180}, reply: Counter{2, 120}, start: start}.encode(f),
		ctMessage{proto: 58, src: mustAP("[2001:db8::1]:0"), dst: mustAP("[2001:db8::2]:0"),
			rsrc: mustAP("[2001:db8::2]:0"), rdst: mustAP("[2001:db8::1]:0"), noPorts: true, noMrk: true}.encode(f),
	}
	b, _ := readDump(f, "dump-4flows.bin")
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range msgs {
		out = append(out, m.Data[4:])
	}
	return out
}

// FuzzDecodeFlow: no input panics, and when the full decode succeeds the
// counters-only decode agrees with it.
func FuzzDecodeFlow(f *testing.F) {
	for _, b := range seedFlows(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var full, counters FlowRecord
		errFull := decodeFlow(b, DetailTuples, &full)
		errCounters := decodeFlow(b, DetailCounters, &counters)
		if errFull != nil {
			return
		}
		if errCounters != nil {
			t.Fatalf("the full decode succeeded, the counters-only one failed: %v", errCounters)
		}
		if full.Mark != counters.Mark || full.Counted != counters.Counted || full.Orig != counters.Orig || full.Reply != counters.Reply {
			t.Fatalf("decodes disagree:\n full %+v\n counters %+v", full, counters)
		}
	})
}

// FuzzDecodeBatch: no read of the socket panics the dump loop, and a batch
// the full decode accepts yields the same flows counted the same way
// without the tuples.
func FuzzDecodeBatch(f *testing.F) {
	for _, name := range []string{"dump-4flows.bin", "dump-done.bin"} {
		b, _ := readDump(f, name)
		f.Add(b)
	}
	for _, body := range seedFlows(f) {
		f.Add(nlBatch(7, unix.AF_INET, body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seq := batchSeq(b) // so mutations keep answering "our" request
		type summary struct {
			mark       uint32
			orig, repl Counter
		}
		run := func(d Detail) (bool, []summary, error) {
			var rec FlowRecord
			var flows []summary
			interrupted := false
			done, err := decodeBatch(b, seq, d, &rec, &interrupted, func(r *FlowRecord) {
				flows = append(flows, summary{r.Mark, r.Orig, r.Reply})
			})
			if err != nil && !done {
				t.Fatalf("error %v without the dump ending", err)
			}
			return done, flows, err
		}
		doneFull, full, errFull := run(DetailTuples)
		doneCounters, counters, errCounters := run(DetailCounters)
		if errFull != nil {
			return
		}
		if errCounters != nil || doneFull != doneCounters || len(full) != len(counters) {
			t.Fatalf("full decode: done %v, %d flows; counters only: done %v, %d flows, err %v", doneFull, len(full), doneCounters, len(counters), errCounters)
		}
		for i := range full {
			if full[i] != counters[i] {
				t.Fatalf("flow %d: full %+v, counters only %+v", i, full[i], counters[i])
			}
		}
	})
}
