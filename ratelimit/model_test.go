package ratelimit

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"nanogate/internal/redistest"
)

// model is the token bucket of the README in exact rational arithmetic: the
// level in tokens, refilled by limit/60 000 000 per µs up to limit, and
// never below -limit. The
// integer units of bucket.go must give exactly the same answers.
type model struct {
	level map[kind]*big.Rat
	ts    map[kind]int64
}

func rat(n int64) *big.Rat { return new(big.Rat).SetInt64(n) }

func ceilRat(r *big.Rat) int64 {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

func floorRat(r *big.Rat) int64 {
	q := new(big.Int).Div(r.Num(), r.Denom()) // Euclidean: floor for a positive denominator
	return q.Int64()
}

// levelAt is the bucket's level at now.
func (m *model) levelAt(k kind, limit, now int64) *big.Rat {
	l, ok := m.level[k]
	if !ok {
		return rat(limit)
	}
	if l.Cmp(rat(-limit)) < 0 {
		l = rat(-limit) // a debt owed under a larger limit
	}
	l = new(big.Rat).Add(l, new(big.Rat).SetFrac64((now-m.ts[k])*limit, minuteMicros))
	if l.Cmp(rat(limit)) > 0 {
		l = rat(limit)
	}
	return l
}

// usUntil is the time in µs until level reaches target at limit/60e6 per µs.
func usUntil(level, target *big.Rat, limit int64) int64 {
	d := new(big.Rat).Sub(target, level)
	if d.Sign() <= 0 {
		return 0
	}
	return ceilRat(d.Mul(d, new(big.Rat).SetFrac64(minuteMicros, limit)))
}

func (m *model) allow(r Request, now int64) Result {
	pl := makePlan(&r)
	var st [numKinds]state
	levels := make([]*big.Rat, pl.n)
	allowed := true
	for i := 0; i < pl.n; i++ {
		limit, cost := pl.p[i].limit, pl.cost[i]
		l := m.levelAt(pl.kinds[i], limit, now)
		levels[i] = l
		st[i] = state{remaining: max(floorRat(l), 0), reset: usUntil(l, rat(limit), limit)}
		switch {
		case cost > limit:
			st[i].retry, allowed = -1, false
		case l.Cmp(rat(cost)) < 0:
			st[i].retry, allowed = usUntil(l, rat(cost), limit), false
		}
	}
	if allowed {
		for i := 0; i < pl.n; i++ {
			limit := pl.p[i].limit
			l := new(big.Rat).Sub(levels[i], rat(pl.cost[i]))
			m.level[pl.kinds[i]], m.ts[pl.kinds[i]] = l, now
			st[i] = state{remaining: max(floorRat(l), 0), reset: usUntil(l, rat(limit), limit)}
		}
	}
	return compose(&pl, &st, allowed)
}

func (m *model) adjust(r Request, delta, now int64) {
	pl := makePlan(&r).tpmOnly()
	for i := 0; i < pl.n; i++ {
		limit := pl.p[i].limit
		l := m.levelAt(pl.kinds[i], limit, now)
		l.Sub(l, rat(delta))
		if l.Cmp(rat(limit)) > 0 {
			l = rat(limit)
		}
		if l.Cmp(rat(-limit)) < 0 {
			l = rat(-limit) // a debt is at most one minute's limit
		}
		m.level[pl.kinds[i]], m.ts[pl.kinds[i]] = l, now
	}
}

// TestMemoryMatchesExactModel drives Memory and the rational model with the
// same random requests, corrections and clock steps, for limits chosen to
// make the arithmetic awkward, and wants identical results.
func TestMemoryMatchesExactModel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		matchModel(t, 200, func() (Limiter, clock) { return NewMemory(), sleepClock{} }, 0)
	})
}

// matchModel runs seeds random sequences against a limiter on a fake clock,
// a new pair for each seed. minStep bounds the clock's steps from below by
// the real time elapsed plus minStep: Redis expires keys in real time, so the
// fake clock must never run slower than the real one.
func matchModel(t *testing.T, seeds uint64, newLimiter func() (Limiter, clock), minStep time.Duration) {
	limits := []int64{1, 7, 13, 60, 600, 9029, 10000, 999_983, 2_000_000, 75_000_001}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 1))
		pick := func() int64 {
			if rng.IntN(4) == 0 {
				return 0
			}
			return limits[rng.IntN(len(limits))]
		}
		lim := Limits{KeyRPM: pick(), KeyTPM: pick(), TeamRPM: pick(), TeamTPM: pick()}
		m, clk := newLimiter()
		ref := &model{level: map[kind]*big.Rat{}, ts: map[kind]int64{}}
		last := time.Now()
		for step := range 300 {
			// Mostly short steps (bursts), sometimes seconds.
			d := time.Duration(rng.Int64N(1+rng.Int64N(3_000_000))) * time.Microsecond
			if minStep > 0 {
				d = max(d, time.Since(last)+minStep)
				last = time.Now()
			}
			clk.Advance(d)
			now := clk.Now().UnixMicro()
			r := Request{Key: "k", Team: fmt.Sprint("t", seed), Limits: lim, Tokens: rng.Int64N(3000)}
			if seed%2 == 1 && rng.IntN(2) == 0 {
				// A batch line: its batch-only buckets too.
				r.Batch, r.Share = true, 0.37
			}
			if rng.IntN(10) == 0 {
				delta := rng.Int64N(4000) - 2000
				m.Adjust(context.Background(), r, delta)
				ref.adjust(r, delta, now)
				continue
			}
			got, _ := m.Allow(context.Background(), r)
			want := ref.allow(r, now)
			if got != want {
				t.Fatalf("seed %d step %d, limits %+v, tokens %d:\n got %+v\nwant %+v", seed, step, lim, r.Tokens, got, want)
			}
		}
	}
}

// TestRedisMatchesExactModel: the Lua scripts agree with the model (and so
// with Memory) to the µs and the token, on a fake clock given to the scripts
// in place of TIME.
func TestRedisMatchesExactModel(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testConfig(srv.Addr)
	matchModel(t, 30, func() (Limiter, clock) {
		clk := newFakeClock()
		l := newTestRedis(t, cfg)
		fakeTime(t, l, clk)
		return l, clk
	}, 2*time.Millisecond)
}
