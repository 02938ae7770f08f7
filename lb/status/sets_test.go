package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
)

type fakeCounter map[string]int

func (f fakeCounter) SetCounts(names []string) (map[string]int, error) {
	out := map[string]int{}
	for _, n := range names {
		if v, ok := f[n]; ok {
			out[n] = v
		}
	}
	return out, nil
}

func TestSetTable(t *testing.T) {
	c := &config.Config{
		Sets: []config.Set{
			{Name: "video", Domains: []string{"video.example"}, Timeout: time.Hour},
			{Name: "office", Files: []string{"/etc/flowpin/office.txt"}},
			{Name: "idle", Domains: []string{"idle.example"}, Resolve: true, Timeout: time.Hour},
		},
		Rules: []config.Rule{{Name: "v", DstSet: "video"}, {Name: "o", SrcSet: "office", DstSet: "video"}},
	}
	s := &Status{}
	if err := addSets(s, c, struct {
		NFT
		fakeCounter
	}{nil, fakeCounter{"set4_video": 3, "set6_video": 1, "set4_office": 1000, "set6_office": 0}}); err != nil {
		t.Fatal(err)
	}
	if len(s.Sets) != 3 || s.Sets[0].Elements4 != 3 || s.Sets[0].Elements6 != 1 || strings.Join(s.Sets[0].Rules, ",") != "v,o" ||
		s.Sets[1].Kind != "file" || s.Sets[1].Elements4 != 1000 || s.Sets[2].Elements4 != -1 {
		t.Fatalf("sets %+v", s.Sets)
	}
	if w := strings.Join(s.Warnings, "\n"); !strings.Contains(w, "set idle is used by no rule") || !strings.Contains(w, "set idle is missing from table inet flowpin") {
		t.Errorf("warnings %q", w)
	}
	var b bytes.Buffer
	if err := WriteSets(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"SET     FILLED BY", "video   resolver: video.example", "office  file /etc/flowpin/office.txt", "idle    flowpin run: idle.example", "missing"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}
