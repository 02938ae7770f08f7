package nft

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

func TestVerifyMarkWrites(t *testing.T) {
	le := binaryutil.NativeEndian.PutUint32
	metaLoad := &expr.Meta{Key: expr.MetaKeyMARK, Register: 1}
	metaStore := &expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true}
	ctLoad := &expr.Ct{Key: expr.CtKeyMARK, Register: 1}
	// As google/nftables v0.3.0 decodes `ct mark set`: no register at all.
	ctStoreDecoded := &expr.Ct{Key: expr.CtKeyMARK}
	bitwise := func(mask, xor uint32) *expr.Bitwise {
		return &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(mask), Xor: le(xor)}
	}
	cases := []struct {
		name  string
		exprs []expr.Any
		what  string
		bits  uint32 // 0: no write
	}{
		{"meta mark set 0", []expr.Any{&expr.Immediate{Register: 1, Data: le(0)}, metaStore}, "meta mark", 0xffffffff},
		{"meta mark set meta mark & 0xffff00ff", []expr.Any{metaLoad, bitwise(0xffff00ff, 0), metaStore}, "meta mark", 0xff00},
		{"meta mark set meta mark | 0x1", []expr.Any{metaLoad, bitwise(0xfffffffe, 1), metaStore}, "meta mark", 0x1},
		{"meta mark set ct mark", []expr.Any{ctLoad, metaStore}, "meta mark", 0xffffffff},
		{"ct mark set meta mark (decoded)", []expr.Any{metaLoad, ctStoreDecoded}, "ct mark", 0xffffffff},
		{"ct mark set ct mark | 0x10 (decoded)", []expr.Any{ctLoad, bitwise(0xffffffef, 0x10), ctStoreDecoded}, "ct mark", 0x10},
		{"match on the mark only", []expr.Any{metaLoad, bitwise(0xff00, 0), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: le(0x100)}}, "", 0},
	}
	for _, c := range cases {
		ws := markWrites(c.exprs)
		switch {
		case c.bits == 0 && len(ws) != 0:
			t.Errorf("%s: want no write, got %+v", c.name, ws)
		case c.bits != 0 && (len(ws) != 1 || ws[0].What != c.what || ws[0].Bits != c.bits):
			t.Errorf("%s: want %s bits %#x, got %+v", c.name, c.what, c.bits, ws)
		}
	}
}

// TestVerifyForeignMarkWritersInNamespace loads rules with nft(8) in a
// fresh namespace and reads them back through netlink.
func TestVerifyForeignMarkWritersInNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a network namespace: not a unit test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft(8) not installed (make test installs it)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "fp" + hex.EncodeToString(b) + "-nft"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	script := `table inet flowpin {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta mark set meta mark & 0xffff00ff | 0x100
	}
}
table ip keep {
	chain pre {
		type filter hook prerouting priority 10; policy accept;
		meta mark set meta mark | 0x1
		ct mark set ct mark & 0xfffffffe
	}
}
table inet clobber {
	chain out {
		type route hook output priority 0; policy accept;
		tcp dport 22 meta mark set 0x0 comment "ssh"
	}
	chain post {
		type filter hook postrouting priority 0; policy accept;
		ct mark set meta mark
	}
}
`
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	var ws []MarkWriter
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
		ws, err = (&Conn{}).ForeignMarkWriters(0xff00)
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		got = append(got, w.Where()+" "+w.What)
	}
	// Handles count per table: its two chains take 1 and 2.
	want := []string{
		`table inet clobber chain out handle 3 (hook output priority 0) comment "ssh" meta mark`,
		`table inet clobber chain post handle 4 (hook postrouting priority 0) ct mark`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("writers:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
