package nft

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

// Over a table whose domain set had another timeout, the script deletes
// the set after the flush and makes it anew with the elements it had,
// each with the time it had left, as Apply's batch does; a set and a
// chain the spec no longer has are deleted. Over no table, it is Render.
func TestRenderOverTable(t *testing.T) {
	old := setSpec(2, time.Hour)
	cur := old.Current()
	cur.Sets = append(cur.Sets, "set4_gone")
	cur.hooks["gone"] = ""
	s := setSpec(2, 2*time.Hour)
	l := s.layout()
	for i, d := range l.sets {
		if d.set.Name == "set4_video" {
			l.sets[i].carried = []nftables.SetElement{{Key: netip.MustParseAddr("203.0.113.10").AsSlice(), Timeout: 59*time.Minute + 30*time.Second + 5*time.Millisecond}}
		}
	}
	got := l.render(cur)
	for _, want := range []string{
		"add table inet flowpin\nflush table inet flowpin\ndelete set inet flowpin set4_gone\ndelete set inet flowpin set4_video\ndelete set inet flowpin set6_video\ndelete chain inet flowpin gone\n",
		"set set4_video {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\ttimeout 2h\n\t\telements = { 203.0.113.10 timeout 3570005ms }\n\t}",
		"set set6_video {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t\ttimeout 2h\n\t}",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the script lacks\n%s\n--- script:\n%s", want, got)
		}
	}
	if strings.Contains(got, "delete set inet flowpin set4_office") || strings.Contains(got, "add set inet flowpin set4_video") {
		t.Errorf("the script deletes or flushes a set it keeps:\n%s", got)
	}
	if l.render(nil) != s.Render() || s.layout().render(&Current{}) != s.Render() {
		t.Error("over no table, the script is not Render's")
	}
}
