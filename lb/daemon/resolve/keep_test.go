package resolve

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// A reload with the same resolve sets asks no name again before its time;
// changed sets get a resolver of their own, and the old one stops.
func TestKeeperAcrossReloads(t *testing.T) {
	r := &fakeResolver{answers: map[string][]netip.Addr{}, ttl: time.Hour}
	w := &fakeWriter{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var k Keeper
	servers := []string{"192.0.2.53:53"}
	reload := func(sets []Set) {
		k.Keep(ctx, sets, servers, func(ctx context.Context) { Run(ctx, sets, r, w, quiet, RealClock) })
	}
	// asked waits until the resolvers asked want names in all (however
	// slow the machine), then a while for any they should not ask.
	asked := func(want int) []string {
		get := func() []string {
			r.mu.Lock()
			defer r.mu.Unlock()
			return slices.Clone(r.asked)
		}
		for deadline := time.Now().Add(5 * time.Second); len(get()) < want && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		return get()
	}
	bank := []Set{{Name: "bank", Domains: []string{"bank.example"}, Timeout: time.Hour}}
	for range 5 {
		reload(slices.Clone(bank))
		time.Sleep(50 * time.Millisecond) // reloads a while apart
	}
	if got := asked(1); len(got) != 1 {
		t.Errorf("five reloads with the same set: asked %v, want bank.example once", got)
	}
	reload([]Set{{Name: "bank", Domains: []string{"bank.example", "pay.example"}, Timeout: time.Hour}})
	if got := asked(3); len(got) != 3 || got[1] != "bank.example" || got[2] != "pay.example" {
		t.Errorf("a changed set: asked %v, want both names once more", got)
	}
	// Other servers in resolv.conf: asked anew.
	servers = []string{"198.51.100.53:53"}
	reload([]Set{{Name: "bank", Domains: []string{"bank.example", "pay.example"}, Timeout: time.Hour}})
	if got := asked(5); len(got) != 5 {
		t.Errorf("other servers: asked %v, want both names once more", got)
	}
	reload(nil)
	reload(nil)
	if got := asked(5); len(got) != 5 {
		t.Errorf("no set: asked %v", got)
	}
}
