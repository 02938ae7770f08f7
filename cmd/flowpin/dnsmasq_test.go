package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// flowpin dnsmasq prints the domain sets' lines without privileges and
// without the file sets' files (they may live only on the router).
func TestDnsmasqCommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(cfg, []byte("links: [{name: a, interface: eth0, gateway: 192.0.2.1}]\nsets: [{name: video, domains: [Video.Example.]}, {name: o, files: [/nonexistent/x.txt]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs([]string{"dnsmasq", "-c", cfg})
	if err := root.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "\nnftset=/video.example/4#inet#flowpin#set4_video,6#inet#flowpin#set6_video\n") {
		t.Errorf("output:\n%s", out.String())
	}
}
