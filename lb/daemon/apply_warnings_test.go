package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"flowpin/lb/config/configtest"
)

// What an apply warns of (with ha, marks moved under live flows by a
// reload that turned ha on; a flush that failed) reaches the daemon's
// log, as it reaches flowpin apply's.
func TestSyncLogsApplyWarnings(t *testing.T) {
	c := configtest.MustParse(t, "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true}\n")
	rec := &transcript{}
	k := newFakeKernel(rec, c)
	var buf bytes.Buffer
	d := New(c, Deps{Applier: k, Conntrack: k}, slog.New(slog.NewTextHandler(&buf, nil)))
	k.warnings = []string{"ha: links moved to the marks and tables of the config alone"}
	if err := d.sync("reload"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "ha: links moved") {
		t.Errorf("log:\n%s", buf.String())
	}
}
