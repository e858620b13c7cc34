package ratelimit

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"nanogate/internal/redistest"
)

// extremeTokens are token counts and corrections where wrapping arithmetic
// breaks: the reproduction of a request estimated at 3·2^61 tokens among
// them.
var extremeTokens = []int64{0, 1, -1, 7, 1290, 1 << 31, 1<<52 + 1, 3*(1<<61) - 1290,
	432345564227567616, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1}

var extremeLimits = []int64{-1, 0, 1, 7, 60, 10_000, 60_000_001, MaxLimit, MaxLimit + 1, math.MaxInt64}

func pick(r *rand.Rand, xs []int64) int64 {
	if r.IntN(4) == 0 {
		return r.Int64() - r.Int64() // anything at all, either sign
	}
	return xs[r.IntN(len(xs))]
}

// TestPropertyNoBucketBelowMinusCapacity drives a limiter with random
// extreme limits, estimates and corrections and checks after every step that
// no TPM bucket owes more than one minute's limit: the time until a bucket
// is full again (ResetTokens) never exceeds two minutes, whatever was
// charged. An allowed request never costs more than a limit, and the
// reported remaining tokens stay within [0, limit].
func TestPropertyNoBucketBelowMinusCapacity(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			propertyNoDeepDebt(t, NewMemory(), sleepClock{}.Advance, 3000)
		})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		propertyNoDeepDebt(t, newTestRedis(t, testConfig(srv.Addr)), func(time.Duration) {}, 600)
	})
}

func propertyNoDeepDebt(t *testing.T, l Limiter, advance func(time.Duration), steps int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(17, 42))
	const slack = time.Millisecond // rounding of µs to durations
	for i := range steps {
		lim := Limits{KeyTPM: pick(rng, extremeLimits), TeamTPM: pick(rng, extremeLimits),
			KeyRPM: pick(rng, extremeLimits), TeamRPM: pick(rng, extremeLimits)}
		// Few names, so that buckets are hit again with other limits (a
		// config reload changes a bucket's units).
		req := Request{Key: []string{"k1", "k2"}[rng.IntN(2)], Team: "t", Tokens: pick(rng, extremeTokens), Limits: lim}
		if rng.IntN(2) == 0 {
			if err := l.Adjust(ctx, req, pick(rng, extremeTokens)); err != nil {
				t.Fatalf("step %d: Adjust: %v", i, err)
			}
		}
		res, err := l.Allow(ctx, req)
		if err != nil {
			t.Fatalf("step %d: Allow: %v", i, err)
		}
		if res.ResetTokens > 2*time.Minute+slack {
			t.Fatalf("step %d: %+v with limits %+v: a bucket owes more than one minute (reset %v)", i, res, lim, res.ResetTokens)
		}
		if res.RemainingTokens < 0 || (res.LimitTokens > 0 && res.RemainingTokens > res.LimitTokens) {
			t.Fatalf("step %d: remaining %d of %d", i, res.RemainingTokens, res.LimitTokens)
		}
		if res.Allowed && req.Tokens > 0 {
			for _, tpm := range []int64{lim.KeyTPM, lim.TeamTPM} {
				if tpm > 0 && req.Tokens > effectiveLimit(tpm) {
					t.Fatalf("step %d: allowed %d tokens under a limit of %d", i, req.Tokens, tpm)
				}
			}
		}
		if rng.IntN(8) == 0 {
			advance(time.Duration(rng.Int64N(int64(3 * time.Minute))))
		}
	}
}

// TestDebtIsRepaidWithinTwoMinutes is the reproduction: one correction of
// about 2^62 tokens (a request whose usage was reported, or estimated, as
// huge) used to leave a team's TPM bucket near -2^52 units, locking every key
// of the team out for a century. Now the team is served again two minutes
// later.
func TestDebtIsRepaidWithinTwoMinutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory()
		req := Request{Key: "k", Team: "t", Tokens: 1290, Limits: Limits{TeamTPM: 10_000, KeyTPM: 100_000}}
		if !allow(t, m, req).Allowed {
			t.Fatal("first request refused")
		}
		m.Adjust(context.Background(), req, 3*(1<<61)-1290)
		res := allow(t, m, req)
		if res.Allowed || res.ResetTokens > 2*time.Minute {
			t.Fatalf("after the huge debt: %+v", res)
		}
		sleepClock{}.Advance(2 * time.Minute)
		if res := allow(t, m, req); !res.Allowed {
			t.Fatalf("two minutes later the team is still locked out: %+v", res)
		}
	})
}

// FuzzBucketArithmetic checks the bucket helpers for any stored state, limit,
// clock and correction: the level stays within [-capacity, capacity].
func FuzzBucketArithmetic(f *testing.F) {
	f.Add(int64(10_000), int64(-1), int64(60_000_000), int64(0), int64(5), int64(3*(1<<61)-1290))
	f.Add(int64(1), int64(math.MinInt64), int64(1), int64(math.MaxInt64), int64(-1), int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, limit, lvl, unit, ts, now, delta int64) {
		if limit <= 0 || unit <= 0 {
			return // no bucket: limits are positive, units too
		}
		p := paramsFor(limit)
		// A stored level is what an earlier write left: within its own
		// bounds, in its own units.
		old := paramsFor(max(1, unit%MaxLimit))
		lvl = max(-old.cap, min(lvl, old.cap))
		ts, now = ts%(1<<50), now%(1<<50) // µs timestamps of this era and a few decades on
		l := level(lvl, ts, old.unit, now, &p)
		if l < -p.cap || l > p.cap {
			t.Fatalf("level %d outside ±%d", l, p.cap)
		}
		a := adjusted(l, delta, &p)
		if a < -p.cap || a > p.cap {
			t.Fatalf("adjusted %d outside ±%d", a, p.cap)
		}
	})
}
