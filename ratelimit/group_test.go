package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
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

// heldLimiter is a limiter on a fresh Redis whose first pipeline of
// scripts waits for hook.release.
func heldLimiter(t *testing.T) (*Redis, *holdFirstPipeline) {
	cfg := testConfig(redistest.Start(t).Addr)
	client := NewClient(cfg)
	hook := &holdFirstPipeline{entered: make(chan struct{}), release: make(chan struct{})}
	client.AddHook(hook)
	l := NewRedis(client, cfg, nil)
	t.Cleanup(func() { l.Close() })
	return l, hook
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
	l, hook := heldLimiter(t)

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
	cfg := testConfig(silentServer(t)) // every pipeline times out
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

// fakeTime makes l's scripts read the time from their last two arguments,
// given by clk, instead of TIME.
func fakeTime(t *testing.T, l *Redis, clk *fakeClock) {
	t.Helper()
	l.now = clk.Now
	for i, src := range []string{allowLua, adjustLua} {
		const time = "call('TIME')"
		if !strings.Contains(src, time) {
			t.Fatalf("script %d does not read %s", i, time)
		}
		l.scripts[i] = newScript(strings.Replace(src, time, "{ARGV[#ARGV - 1], ARGV[#ARGV]}", 1))
	}
}

// TestGroupDecidesAsOneAfterTheOther: a group's script gives every request
// of the group the decision, and leaves every bucket in the state, that the
// same requests sent one at a time give, in order, at the same instant:
// random requests over keys and teams that share buckets, with limits that
// change between requests, on two prefixes of one Redis.
func TestGroupDecidesAsOneAfterTheOther(t *testing.T) {
	addr := redistest.Start(t).Addr
	clk := newFakeClock()
	cfgA, cfgB := testConfig(addr), testConfig(addr)
	cfgA.KeyPrefix, cfgB.KeyPrefix = "a:", "b:"
	grouped, single := newTestRedis(t, cfgA), newTestRedis(t, cfgB)
	fakeTime(t, grouped, clk)
	fakeTime(t, single, clk)
	rng := rand.New(rand.NewPCG(7, 11))
	request := func() Request {
		r := Request{Key: fmt.Sprintf("k%d", rng.IntN(3)), Team: fmt.Sprintf("t%d", rng.IntN(2)),
			Tokens: int64(rng.IntN(600)) - 50}
		if rng.IntN(4) > 0 {
			r.Limits.KeyRPM = int64(1 + rng.IntN(6))
		}
		if rng.IntN(4) > 0 {
			r.Limits.KeyTPM = int64(100 * (1 + rng.IntN(5)))
		}
		if rng.IntN(3) > 0 {
			r.Limits.TeamRPM = int64(5 + rng.IntN(10))
		}
		if rng.IntN(3) > 0 {
			r.Limits.TeamTPM = int64(1000 * (1 + rng.IntN(3)))
		}
		return r
	}
	ctx := context.Background()
	admitted, refused := 0, 0
	for round := range 60 {
		n := 1 + rng.IntN(40)
		batch := make([]*admission, n)
		ds := make([]Pending, n)
		for i := range batch {
			batch[i] = &admission{r: request(), d: &ds[i]}
		}
		grouped.grp.exec(batch)
		for i, a := range batch {
			got, err := ds[i].Result(ctx)
			if err != nil {
				t.Fatalf("round %d, request %d: %v", round, i, err)
			}
			want, err := single.Allow(ctx, a.r)
			if err != nil {
				t.Fatalf("round %d, request %d alone: %v", round, i, err)
			}
			if got != want {
				t.Fatalf("round %d, request %d %+v:\ngroup %+v\nalone %+v", round, i, a.r, got, want)
			}
			if got.Allowed {
				admitted++
			} else {
				refused++
			}
		}
		for _, team := range []string{"t0", "t1"} {
			for _, key := range []string{"k0", "k1", "k2"} {
				na, nb := bucketKeys("a:", team, key), bucketKeys("b:", team, key)
				for k := range na.key {
					va, _ := grouped.client.Get(ctx, na.key[k]).Result()
					vb, _ := single.client.Get(ctx, nb.key[k]).Result()
					if va != vb {
						t.Fatalf("round %d: bucket %s is %q after the group, %q one by one", round, na.key[k], va, vb)
					}
				}
			}
		}
		clk.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
	}
	if admitted == 0 || refused == 0 {
		t.Fatalf("admitted %d, refused %d: the test needs both", admitted, refused)
	}
}

// TestPanicInAGroupFreesIt: a panic while a group's pipeline is built (a
// caller's also) reaches the request that led the group; every other
// admission of the group still gets its decision, and the group takes
// admissions after it.
func TestPanicInAGroupFreesIt(t *testing.T) {
	l, hook := heldLimiter(t)
	r := Request{Key: "k", Team: "t", Limits: Limits{KeyRPM: 100}}
	var decided, panicked atomic.Int64
	admit := func(also Joiner) {
		defer func() {
			if recover() != nil {
				panicked.Add(1)
			}
		}()
		var d Pending
		l.Admit(r, &d, also)
		if res, err := d.Result(context.Background()); err == nil && res.Allowed {
			decided.Add(1)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { admit(nil) })
	<-hook.entered
	for i := range 5 {
		var also Joiner
		if i == 2 {
			also = JoinFunc(func(redis.Pipeliner) { panic("also") })
		}
		wg.Go(func() { admit(also) })
	}
	poll.Until(t, 30*time.Second, "five admissions queued", func() bool { return l.grp.queued() == 5 })
	close(hook.release)
	wg.Wait()
	if panicked.Load() != 1 || decided.Load() != 5 {
		t.Fatalf("%d panicked, %d decided of 6 admissions; want 1 and 5", panicked.Load(), decided.Load())
	}
	if res, err := l.Allow(context.Background(), r); err != nil || !res.Allowed {
		t.Fatalf("after the panic: %+v, %v", res, err)
	}
}
