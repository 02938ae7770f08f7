package nft

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// udpEcho sends n datagrams over lo and answers each, in the namespace of
// the calling thread: one flow, n packets each way.
func udpEcho(n int) error {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.Close()
	cl, err := net.Dial("udp4", srv.LocalAddr().String())
	if err != nil {
		return err
	}
	defer cl.Close()
	buf := make([]byte, 64)
	for range n {
		if _, err := cl.Write([]byte("ping")); err != nil {
			return err
		}
		_ = srv.SetReadDeadline(time.Now().Add(time.Second))
		k, from, err := srv.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := srv.WriteTo(buf[:k], from); err != nil {
			return err
		}
		_ = cl.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := cl.Read(buf); err != nil {
			return err
		}
	}
	return nil
}

// The save, restore and from rules count what they match, and Counters
// reads them back by chain and purpose. On lo every packet leaves and
// arrives on the "link": the first datagram pins the flow on the way
// out (postrouting save), every later packet of the flow is restored in
// output, and every packet arrives through the from rule.
func TestCountersInNamespace(t *testing.T) {
	spec := Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "lo", Mark: 0x100}, {Name: "isp2", Iface: "wan2", Mark: 0x200}}}
	inFreshNS(t, func(ns string) error {
		if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		c := &Conn{}
		if _, err := c.Apply(spec); err != nil {
			return err
		}
		if err := udpEcho(3); err != nil {
			return err
		}
		m, err := c.Counters()
		if err != nil {
			return err
		}
		for _, k := range []string{"prerouting save isp1", "prerouting from isp1", "prerouting restore isp1", "output restore isp1", "postrouting save isp1", "postrouting save isp2"} {
			if _, ok := m[k]; !ok {
				t.Errorf("no counter %q in %v", k, m)
			}
		}
		// 3 datagrams and 3 answers, all local: each leaves once and
		// arrives once.
		out, in := LinkTraffic(m, "isp1")
		if out.Packets != 6 || in.Packets != 6 || out.Bytes != in.Bytes || out.Bytes == 0 {
			t.Errorf("isp1: out %+v in %+v, want 6 packets each way, same bytes", out, in)
		}
		if got := m["postrouting save isp1"].Packets; got != 1 {
			t.Errorf("save counted %d packets, want 1 (the flow's first)", got)
		}
		if o, i := LinkTraffic(m, "isp2"); o != (Counter{}) || i != (Counter{}) {
			t.Errorf("isp2 saw traffic: %+v %+v", o, i)
		}
		// A re-apply that changes nothing keeps the counts.
		if wrote, err := c.Apply(spec); wrote || err != nil {
			t.Errorf("second apply wrote=%v err=%v", wrote, err)
		}
		return nil
	})
}

// `nft list` is what an operator reads: the link maps must show their
// interface names and marks as written, not "" and byte-swapped marks
// (nft prints a host-order key as it finds it unless the set says so).
func TestMapsListReadably(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (make deps)")
	}
	spec := Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true}, {Name: "isp2", Iface: "wan2", Mark: 0x200, NAT: true}}}
	inFreshNS(t, func(ns string) error {
		if _, err := (&Conn{}).Apply(spec); err != nil {
			return err
		}
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "flowpin").CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft list: %v: %s", err, out)
		}
		text := string(out)
		for _, want := range []string{`"wan1" : goto`, `"wan2" : goto`, `"wan1" : jump`, `0x00000100 : goto`, `0x00000200 : goto`} {
			if !strings.Contains(text, want) {
				t.Errorf("nft list has no %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, `""`) {
			t.Errorf("nft list shows an empty interface name:\n%s", text)
		}
		return nil
	})
}
