package nft

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netns"
)

// inFreshNS runs fn on a thread inside a new network namespace.
func inFreshNS(t *testing.T, fn func(ns string) error) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and a network namespace")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "fp" + hex.EncodeToString(b) + "-nft"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn(ns)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// Record saves records without touching the other chains, and Current
// (what the fake returns) is what Read finds in the kernel.
func TestRecordInNamespace(t *testing.T) {
	spec := Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true}, {Name: "isp2", Iface: "wan2", Mark: 0x200}}}
	inFreshNS(t, func(ns string) error {
		c := &Conn{}
		a1 := Records{Sysctls: []SysctlRecord{{"a", "1"}}}
		if wrote, err := c.Record(a1); !wrote || err != nil {
			t.Fatalf("Record on no table: %v %v", wrote, err)
		}
		cur, err := c.Read()
		if err != nil {
			return err
		}
		if !cur.Exists || !cur.Records.Equal(a1) || len(cur.Chains) != len(chains) {
			t.Errorf("after Record: %+v", cur)
		}
		if wrote, err := c.Record(a1); wrote || err != nil {
			t.Errorf("same records again: wrote=%v err=%v", wrote, err)
		}
		spec.Records = Records{Sysctls: a1.Sysctls, Links: []LinkRecord{{"isp1", 0x100, 101}}}
		if wrote, err := c.Apply(spec); !wrote || err != nil {
			t.Fatalf("Apply: %v %v", wrote, err)
		}
		cur, err = c.Read()
		if err != nil {
			return err
		}
		want := spec.Current()
		if diff := cmp.Diff(want.Chains, cur.Chains); diff != "" || !want.Records.Equal(cur.Records) || !spec.UpToDate(cur) {
			t.Errorf("Spec.Current differs from Read (-current +read):\n%s", diff)
		}
		out, err := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		var order []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "chain" {
				order = append(order, f[1])
			}
		}
		// The base chains and the records first, as Render writes them.
		if diff := cmp.Diff(spec.ChainNames(), order); diff != "" {
			t.Errorf("chain order after Record then Apply (-want +got):\n%s", diff)
		}
		more := spec.Records.Clone()
		more.Sysctls = append(more.Sysctls, SysctlRecord{"b", "2"})
		if wrote, err := c.Record(more); !wrote || err != nil {
			t.Fatalf("Record on the table: %v %v", wrote, err)
		}
		after, err := c.Read()
		if err != nil {
			return err
		}
		for _, ch := range []string{"prerouting", "output", "postrouting", "nat"} {
			if !slices.Equal(cur.Chains[ch], after.Chains[ch]) {
				t.Errorf("Record changed chain %s", ch)
			}
		}
		if want := []string{"sysctl a=1", "sysctl b=2", "link isp1 mark=0x100 table=101"}; !slices.Equal(after.Chains["state"], want) || !after.Records.Equal(more) {
			t.Errorf("records after Record: %q, want %q", after.Chains["state"], want)
		}
		return nil
	})
}

// Another program deletes and recreates flowpin's table while Read runs
// its several requests: no read fails, each sees the table or none.
func TestReadRacingDeletesInNamespace(t *testing.T) {
	inFreshNS(t, func(ns string) error {
		c := &Conn{}
		script := "add table inet " + TableName + "\nadd chain inet " + TableName + " a\nadd rule inet " + TableName + " a counter\nadd chain inet " + TableName + " b\nadd rule inet " + TableName + " b counter\nadd set inet " + TableName + " s { type ipv4_addr; }\n"
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(script)
				if i%2 == 1 {
					cmd.Stdin = strings.NewReader("delete table inet " + TableName + "\n")
				}
				if out, err := cmd.CombinedOutput(); err != nil {
					done <- fmt.Errorf("nft: %v\n%s", err, out)
					return
				}
			}
		}()
		deadline := time.Now().Add(time.Second)
		reads, seen := 0, 0
		var failed error
		for time.Now().Before(deadline) && failed == nil {
			cur, err := c.Read()
			if err != nil {
				failed = err
				break
			}
			reads++
			if cur.Exists {
				seen++
			}
		}
		close(stop)
		if err := <-done; err != nil {
			return err
		}
		t.Logf("%d reads, %d saw the table", reads, seen)
		if failed != nil {
			t.Errorf("read %d failed while another program rewrote the table: %v", reads+1, failed)
		}
		if seen == 0 || seen == reads {
			t.Errorf("%d of %d reads saw the table: the race was not run", seen, reads)
		}
		return nil
	})
}
