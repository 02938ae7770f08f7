package resolve

import (
	"context"
	"reflect"
	"sync"
)

// Keeper runs the resolver of the config the daemon runs. A reload starts
// the daemon anew, but the same sets keep their resolver, and with it its
// schedule: a resolver started anew looks every name up at once, so a
// reload loop, or a set file rewritten often (each change is a reload),
// made a query storm of every name of every set.
type Keeper struct {
	mu      sync.Mutex
	sets    []Set
	servers []string
	cancel  context.CancelFunc
}

// Keep runs start (a goroutine of its own) for sets asking servers,
// unless it runs for equal ones already; a resolver for others is stopped
// first. No sets: none runs. ctx is the daemon's, which outlives reloads.
func (k *Keeper) Keep(ctx context.Context, sets []Set, servers []string, start func(ctx context.Context)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cancel != nil && reflect.DeepEqual(k.sets, sets) && reflect.DeepEqual(k.servers, servers) {
		return
	}
	if k.cancel != nil {
		k.cancel()
		k.cancel = nil
	}
	k.sets, k.servers = sets, servers
	if len(sets) == 0 {
		return
	}
	ctx, k.cancel = context.WithCancel(ctx)
	go start(ctx)
}
