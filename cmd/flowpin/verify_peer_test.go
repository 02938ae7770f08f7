package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// verify --peer reads the peer's /status.json: from a base URL or the
// document's own URL, never by a redirect (a peer, or whatever answers on
// its address, must not send verify elsewhere) nor through the
// environment's proxy (the peer is on the sync link), and only over http.
func TestPeerStatus(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte(`{"mark_mask":65280,"ha":{"role":"backup"}}`))
	}))
	defer other.Close()
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status.json":
			w.Write([]byte(`{"mark_mask":65280,"ha":{"role":"backup"}}`))
		case "/huge/status.json":
			// A valid document, larger than verify reads.
			w.Write([]byte(`{"warnings":["`))
			w.Write(bytes.Repeat([]byte("a"), 17<<20))
			w.Write([]byte(`"]}`))
		case "/moved/status.json":
			http.Redirect(w, r, other.URL+"/status.json", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer peer.Close()

	for _, base := range []string{peer.URL, peer.URL + "/", peer.URL + "/status.json"} {
		st, err := peerStatus(base)
		if err != nil || st.HA == nil || st.HA.Role != "backup" {
			t.Errorf("%s: %+v, %v", base, st, err)
		}
	}
	if _, err := peerStatus(peer.URL + "/huge"); err == nil {
		t.Errorf("a body of 17 MiB was read whole")
	}
	if _, err := peerStatus(peer.URL + "/moved"); err == nil || elsewhere.Load() != 0 {
		t.Errorf("redirect: err %v, followed %d times", err, elsewhere.Load())
	}
	for _, bad := range []string{"ftp://127.0.0.1:9", "127.0.0.1:9", "file:///etc/passwd", "http://", "http://127.0.0.1:9?x=1"} {
		_, err := peerStatus(bad)
		if err == nil || !strings.HasPrefix(err.Error(), "--peer ") {
			t.Errorf("%q: %v, want an error about --peer", bad, err)
		}
	}
	if tr, ok := peerClient().Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Errorf("the peer client's transport %#v goes by the environment's proxy", peerClient().Transport)
	}
}
