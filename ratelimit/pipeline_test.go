package ratelimit

import (
	"context"
	"testing"

	"nanogate/internal/redistest"
)

// TestQueuedDecisions: decisions queued in one pipeline with a command on a
// key of another slot are each decided once, in order, exactly as Allow
// would, on a fresh Redis that does not have the script yet (the first
// decision comes back NOSCRIPT and is run alone) and on a cluster, where
// the pipeline is split by node.
func TestQueuedDecisions(t *testing.T) {
	for name, addrs := range map[string]func(t *testing.T) []string{
		"SingleNode": func(t *testing.T) []string { return []string{redistest.Start(t).Addr} },
		"Cluster":    startCluster,
	} {
		t.Run(name, func(t *testing.T) {
			l := newTestRedis(t, testConfig(addrs(t)...))
			ctx := context.Background()
			r := Request{Key: "k", Team: "t", Limits: Limits{KeyRPM: 2, TeamRPM: 100}, Tokens: 10}
			p := l.Pipeline()
			var d [3]Pending
			for i := range d {
				l.Queue(ctx, p, r, &d[i])
			}
			other := p.Incr(ctx, "test:{elsewhere}:n")
			l.Exec(ctx, p)
			for i, want := range []bool{true, true, false} {
				res, err := d[i].Result(ctx)
				if err != nil || res.Allowed != want || res.Degraded {
					t.Fatalf("decision %d: %+v, %v; want allowed %v", i, res, err, want)
				}
			}
			if n, err := other.Result(); n != 1 || err != nil {
				t.Fatalf("the other command: %d, %v", n, err)
			}
			// The script is loaded now; the key's bucket holds the two
			// charges (it refills one request in 30 s).
			p = l.Pipeline()
			var last Pending
			l.Queue(ctx, p, Request{Key: "k", Team: "t", Limits: r.Limits}, &last)
			l.Exec(ctx, p)
			res, err := last.Result(ctx)
			if err != nil || res.Allowed || res.Refused != RefusedKeyRPM || res.RemainingRequests != 0 {
				t.Fatalf("after two charges: %+v, %v", res, err)
			}
			if s := l.Stats(); s.Decisions != 4 || s.Refusals != 2 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestQueueWithoutLimits: a request no limit applies to queues nothing and
// is admitted, as Allow admits it.
func TestQueueWithoutLimits(t *testing.T) {
	l := newTestRedis(t, testConfig(redistest.Start(t).Addr))
	ctx := context.Background()
	p := l.Pipeline()
	var d Pending
	l.Queue(ctx, p, Request{Key: "k"}, &d)
	if n := p.Len(); n != 0 {
		t.Fatalf("%d commands queued", n)
	}
	l.Exec(ctx, p)
	if res, err := d.Result(ctx); err != nil || !res.Allowed {
		t.Fatalf("%+v, %v", res, err)
	}
}
