package ratelimit

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// holdFirstPipeline is a go-redis hook that counts the pipelines of
// scripts and holds the first one until release is closed.
type holdFirstPipeline struct {
	pipelines atomic.Int64
	entered   chan struct{}
	release   chan struct{}
}

func (h *holdFirstPipeline) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdFirstPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *holdFirstPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() != "evalsha" {
			return next(ctx, cmds) // a new connection's handshake
		}
		if h.pipelines.Add(1) == 1 {
			close(h.entered)
			<-h.release
		}
		return next(ctx, cmds)
	}
}

func (g *group) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// TestAdmissionsInFlightShareAPipeline: while one admission's pipeline is
// in flight, the admissions that arrive wait and then go together, at most
// maxGroup to a pipeline, and the decisions stay exact.
func TestAdmissionsInFlightShareAPipeline(t *testing.T) {
	cfg := testConfig(redistest.Start(t).Addr)
	client := NewClient(cfg)
	hook := &holdFirstPipeline{entered: make(chan struct{}), release: make(chan struct{})}
	client.AddHook(hook)
	l := NewRedis(client, cfg, nil)
	defer l.Close()

	const waiting = maxGroup + 44 // two pipelines after the first
	const limit = 100
	r := Request{Key: "k", Team: "t", Limits: Limits{KeyRPM: limit}}
	var allowed, refused atomic.Int64
	decide := func() {
		res, err := l.Allow(context.Background(), r)
		switch {
		case err != nil || res.Degraded:
			t.Errorf("decision: %+v, %v", res, err)
		case res.Allowed:
			allowed.Add(1)
		default:
			refused.Add(1)
		}
	}
	var wg sync.WaitGroup
	wg.Go(decide)
	<-hook.entered // the first pipeline is in flight, held
	for range waiting {
		wg.Go(decide)
	}
	poll.Until(t, 30*time.Second, "every admission queued", func() bool { return l.grp.queued() == waiting })
	close(hook.release)
	wg.Wait()

	if n := hook.pipelines.Load(); n != 3 {
		t.Fatalf("%d pipelines for 1 + %d admissions, want 3 (one, then %d and %d)", n, waiting, maxGroup, waiting-maxGroup)
	}
	if allowed.Load() != limit || refused.Load() != waiting+1-limit {
		t.Fatalf("allowed %d, refused %d of %d with an RPM of %d", allowed.Load(), refused.Load(), waiting+1, limit)
	}
	if q := l.grp.queued(); q != 0 || l.grp.busy {
		t.Fatalf("after the burst: %d queued, busy %v", q, l.grp.busy)
	}
}

// TestGroupOutageReachesEveryAdmission: when the pipeline a group shares
// fails, each of its admissions sees the failure and decides as an outage
// says (here, closed: unavailable), and none waits forever.
func TestGroupOutageReachesEveryAdmission(t *testing.T) {
	// A listener that accepts and never answers: every pipeline times out.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cfg := testConfig(ln.Addr().String())
	cfg.ReadTimeout, cfg.WriteTimeout, cfg.DecisionTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	l := NewRedis(NewClient(cfg), cfg, nil)
	defer l.Close()
	var wg sync.WaitGroup
	var unavailable atomic.Int64
	for range 20 {
		wg.Go(func() {
			_, err := l.Allow(context.Background(), Request{Key: "k", Team: "t", Limits: Limits{KeyRPM: 10}})
			if err != nil {
				unavailable.Add(1)
			}
		})
	}
	wg.Wait()
	if unavailable.Load() != 20 {
		t.Fatalf("%d of 20 admissions failed, want all (closed on outage)", unavailable.Load())
	}
}
