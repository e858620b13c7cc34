package ratelimit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// backend is one Limiter under the shared suite. Memory's tests run in a
// synctest bubble, whose fake clock advance moves at once; Redis's on real
// time, which advance sleeps through (the clock is the server's). Against
// real time, results may show the refill of the time the test took: within
// and near allow exactly that.
type backend struct {
	lim   Limiter
	fake  bool
	start time.Time
}

// advance lets d pass: at once in a bubble, for real against Redis.
func (b *backend) advance(d time.Duration) { sleepClock{}.Advance(d) }

// suite makes a fresh Limiter for each test of runSuite; bubble runs each
// test in a synctest bubble.
type suite struct {
	new    func(t *testing.T) Limiter
	bubble bool
}

// run runs f as the subtest name, with a fresh backend.
func (s suite) run(t *testing.T, name string, f func(t *testing.T, b *backend)) {
	t.Run(name, func(t *testing.T) {
		if !s.bubble {
			f(t, &backend{lim: s.new(t), start: time.Now()})
			return
		}
		synctest.Test(t, func(t *testing.T) {
			f(t, &backend{lim: s.new(t), fake: true, start: time.Now()})
		})
	})
}

// within checks a count of tokens that, on a real clock, may have grown by
// the refill of perSecond since the test started.
func (b *backend) within(t *testing.T, what string, got, want int64, perSecond float64) {
	t.Helper()
	hi := want
	if !b.fake {
		hi += int64(math.Ceil(time.Since(b.start).Seconds() * perSecond))
	}
	if got < want || got > hi {
		if hi == want {
			t.Errorf("%s = %d, want %d", what, got, want)
		} else {
			t.Errorf("%s = %d, want %d..%d", what, got, want, hi)
		}
	}
}

// near checks a duration that, on a real clock, may have shrunk by the time
// the test took since it started (and is rounded up to the µs).
func (b *backend) near(t *testing.T, what string, got, want time.Duration) {
	t.Helper()
	lo := want
	if !b.fake {
		lo -= time.Since(b.start) + time.Millisecond
	}
	if got < lo || got > want+time.Microsecond {
		t.Errorf("%s = %v, want %v..%v", what, got, lo, want)
	}
}

// allow is Allow that fails the test on an error.
func allow(t *testing.T, l Limiter, r Request) Result {
	t.Helper()
	res, err := l.Allow(context.Background(), r)
	if err != nil {
		t.Fatalf("Allow(%+v): %v", r, err)
	}
	return res
}

// drain sends r until it is refused (at most max times) and returns how many
// were admitted.
func drain(t *testing.T, l Limiter, r Request, max int) int64 {
	t.Helper()
	n := int64(0)
	for range max {
		if !allow(t, l, r).Allowed {
			return n
		}
		n++
	}
	t.Fatalf("%d requests admitted, expected a refusal", max)
	return n
}

// runSuite is the behaviour every Limiter shares.
func runSuite(t *testing.T, s suite) {
	s.run(t, "BurstAgainstFullBucketAdmitsExactlyCapacity", func(t *testing.T, b *backend) {
		r := Request{Key: t.Name(), Limits: Limits{KeyRPM: 50}}
		admitted := 0
		for i := range 150 {
			res := allow(t, b.lim, r)
			if res.Allowed != (i < 50) {
				t.Fatalf("request %d: Allowed = %v", i+1, res.Allowed)
			}
			if res.Allowed {
				admitted++
			}
		}
		if admitted != 50 {
			t.Errorf("admitted %d, want 50", admitted)
		}
	})

	s.run(t, "ConcurrentBurstAdmitsExactlyCapacity", func(t *testing.T, b *backend) {
		const L = 60
		r := Request{Key: "k", Team: t.Name(), Tokens: 1290,
			Limits: Limits{KeyRPM: 1000, KeyTPM: 1000 * 1290, TeamRPM: L, TeamTPM: 100 * 1290}}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 3 * L {
			wg.Go(func() {
				res, err := b.lim.Allow(context.Background(), r)
				if err != nil {
					t.Error(err)
				}
				if res.Allowed {
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != L {
			t.Errorf("admitted %d of %d concurrent requests, want exactly %d", got, 3*L, L)
		}
	})

	s.run(t, "TeamLimitIsSharedByItsKeys", func(t *testing.T, b *backend) {
		team := t.Name()
		lim := Limits{KeyRPM: 8, TeamRPM: 10}
		a := Request{Key: "a", Team: team, Limits: lim}
		c := Request{Key: "c", Team: team, Limits: lim}
		if n := drain(t, b.lim, a, 20); n != 8 {
			t.Fatalf("key a admitted %d, want its own limit 8", n)
		}
		res := allow(t, b.lim, a)
		// The key is empty (one request at 8 RPM: 7.5 s); the team still
		// has 2.
		if res.Refused != RefusedKeyRPM {
			t.Errorf("key a refused by %q, want key_rpm", res.Refused)
		}
		b.near(t, "RetryAfter", res.RetryAfter, 7500*time.Millisecond)
		if n := drain(t, b.lim, c, 20); n != 2 {
			t.Fatalf("key c admitted %d, want the team's remaining 2", n)
		}
		res = allow(t, b.lim, c)
		if res.Refused != RefusedTeamRPM {
			t.Errorf("key c refused by %q, want team_rpm", res.Refused)
		}
		if res.LimitRequests != 10 || res.RemainingRequests != 0 {
			t.Errorf("request headers: limit %d remaining %d, want the team's 10 and 0", res.LimitRequests, res.RemainingRequests)
		}
	})

	s.run(t, "PeekChargesNothing", func(t *testing.T, b *backend) {
		p, ok := b.lim.(Peeker)
		if !ok {
			t.Fatalf("%T does not peek", b.lim)
		}
		peek := func() Result {
			t.Helper()
			res, err := p.Peek(context.Background(), Request{Key: "k", Team: t.Name(), Tokens: 4000,
				Limits: Limits{KeyRPM: 100, KeyTPM: 5000, TeamRPM: 50, TeamTPM: 100000}})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		lim := Limits{KeyRPM: 100, KeyTPM: 5000, TeamRPM: 50, TeamTPM: 100000}
		r := Request{Key: "k", Team: t.Name(), Tokens: 3000, Limits: lim}
		res := peek()
		if res.LimitRequests != 50 || res.RemainingRequests != 50 || res.LimitTokens != 5000 || res.RemainingTokens != 5000 {
			t.Errorf("peek of fresh buckets %+v, want 50 of 50 requests and 5000 of 5000 tokens", res)
		}
		allow(t, b.lim, r)
		before := b.lim.Stats()
		for range 5 {
			res = peek()
		}
		if s := b.lim.Stats(); s.Decisions != before.Decisions || s.Refusals != before.Refusals {
			t.Errorf("peeks counted as decisions: %+v, then %+v", before, s)
		}
		b.within(t, "peeked RemainingRequests", res.RemainingRequests, 49, 50.0/60)
		b.within(t, "peeked RemainingTokens", res.RemainingTokens, 2000, 5000.0/60)
		if res.ResetRequests <= 0 || res.ResetTokens <= 0 {
			t.Errorf("peek %+v, want times until the buckets are full", res)
		}
		// The peeks took nothing: the last 2000 tokens still pass.
		r.Tokens = 2000
		res = allow(t, b.lim, r)
		if !res.Allowed {
			t.Fatal("the remaining 2000 tokens were refused after peeks")
		}
		b.within(t, "RemainingRequests", res.RemainingRequests, 48, 50.0/60)
		// A debt reads as nothing left.
		if err := b.lim.Adjust(context.Background(), r, 4000); err != nil {
			t.Fatal(err)
		}
		if res = peek(); res.RemainingTokens != 0 {
			t.Errorf("peek in debt: %d tokens remaining, want 0", res.RemainingTokens)
		}
	})

	s.run(t, "RefusalChargesNothing", func(t *testing.T, b *backend) {
		lim := Limits{KeyRPM: 100, KeyTPM: 5000, TeamRPM: 50, TeamTPM: 100000}
		r := Request{Key: "k", Team: t.Name(), Tokens: 3000, Limits: lim}
		res := allow(t, b.lim, r)
		if !res.Allowed {
			t.Fatal("first request refused")
		}
		b.within(t, "RemainingRequests", res.RemainingRequests, 49, 50.0/60)
		b.within(t, "RemainingTokens", res.RemainingTokens, 2000, 5000.0/60)
		res = allow(t, b.lim, r) // 3000 more tokens than the key has
		if res.Allowed || res.Refused != RefusedKeyTPM {
			t.Fatalf("second request: Allowed %v Refused %q, want refused by key_tpm", res.Allowed, res.Refused)
		}
		b.within(t, "RemainingRequests after refusal", res.RemainingRequests, 49, 50.0/60)
		b.within(t, "RemainingTokens after refusal", res.RemainingTokens, 2000, 5000.0/60)
		// Nothing was charged: the key's 2000 tokens and the team's requests
		// are all still there.
		r.Tokens = 2000
		res = allow(t, b.lim, r)
		if !res.Allowed {
			t.Fatal("request for the remaining 2000 tokens refused")
		}
		b.within(t, "RemainingRequests", res.RemainingRequests, 48, 50.0/60)
		b.within(t, "RemainingTokens", res.RemainingTokens, 0, 5000.0/60)
	})

	s.run(t, "ImageRequestsAgainstSmallTPM", func(t *testing.T, b *backend) {
		r := Request{Key: t.Name(), Tokens: 1290, Limits: Limits{KeyRPM: 1000, KeyTPM: 10000}}
		if n := drain(t, b.lim, r, 20); n != 7 { // 7 × 1290 = 9030 ≤ 10000 < 8 × 1290
			t.Errorf("admitted %d requests of 1290 tokens under 10000 TPM, want 7", n)
		}
		res := allow(t, b.lim, r)
		if res.Refused != RefusedKeyTPM || res.LimitTokens != 10000 {
			t.Errorf("Refused %q LimitTokens %d, want key_tpm and 10000", res.Refused, res.LimitTokens)
		}
		b.within(t, "RemainingTokens", res.RemainingTokens, 970, 10000.0/60)
		// 320 tokens missing at 10000/60 per second: 1.92 s.
		b.near(t, "RetryAfter", res.RetryAfter, 1920*time.Millisecond)
	})

	s.run(t, "TokensAboveCapacityAreRefusedForGood", func(t *testing.T, b *backend) {
		r := Request{Key: "k", Team: t.Name(), Tokens: 1290, Limits: Limits{KeyRPM: 1, KeyTPM: 100000, TeamTPM: 1000}}
		res := allow(t, b.lim, r)
		if res.Allowed || res.Refused != RefusedTeamTPM || res.RetryAfter != 0 {
			t.Fatalf("Allowed %v Refused %q RetryAfter %v, want refused by team_tpm with RetryAfter 0", res.Allowed, res.Refused, res.RetryAfter)
		}
		// Nothing charged: the key's single request per minute is intact.
		r.Tokens = 1000
		if res := allow(t, b.lim, r); !res.Allowed {
			t.Fatalf("request within capacity refused by %q", res.Refused)
		}
		// Over capacity is named even when another limit also refuses.
		r.Tokens = 1290
		res = allow(t, b.lim, r)
		if res.Refused != RefusedTeamTPM || res.RetryAfter != 0 {
			t.Errorf("Refused %q RetryAfter %v, want team_tpm and 0", res.Refused, res.RetryAfter)
		}
	})

	s.run(t, "AdjustRefundsAndDebts", func(t *testing.T, b *backend) {
		ctx := context.Background()
		r := Request{Key: t.Name(), Tokens: 1290, Limits: Limits{KeyTPM: 6000}} // 100 tokens/s
		if n := drain(t, b.lim, r, 10); n != 4 {
			t.Fatalf("admitted %d, want 4", n)
		}
		// The responses used less: a refund of 1290 makes room for one more.
		if err := b.lim.Adjust(ctx, r, -1290); err != nil {
			t.Fatal(err)
		}
		res := allow(t, b.lim, r)
		if !res.Allowed {
			t.Fatal("refused after a refund")
		}
		b.within(t, "RemainingTokens", res.RemainingTokens, 840, 100)
		// A debt takes the bucket below zero: then even a request of no
		// tokens waits until it is repaid.
		if err := b.lim.Adjust(ctx, r, 5000); err != nil {
			t.Fatal(err)
		}
		r.Tokens = 0
		res = allow(t, b.lim, r)
		if res.Allowed || res.Refused != RefusedKeyTPM || res.RemainingTokens != 0 {
			t.Fatalf("in debt: Allowed %v Refused %q Remaining %d, want refused by key_tpm with 0 left", res.Allowed, res.Refused, res.RemainingTokens)
		}
		b.near(t, "RetryAfter", res.RetryAfter, 41600*time.Millisecond)    // 4160 tokens of debt at 100/s
		b.near(t, "ResetTokens", res.ResetTokens, 101600*time.Millisecond) // 10160 tokens to full
		// A refund is capped at capacity.
		if err := b.lim.Adjust(ctx, r, -1_000_000); err != nil {
			t.Fatal(err)
		}
		res = allow(t, b.lim, r)
		if !res.Allowed || res.RemainingTokens != 6000 || res.ResetTokens != 0 {
			t.Errorf("after a large refund: Allowed %v Remaining %d Reset %v, want a full bucket of 6000", res.Allowed, res.RemainingTokens, res.ResetTokens)
		}
		// Adjust of a request without token limits is a no-op.
		if err := b.lim.Adjust(ctx, Request{Key: t.Name(), Limits: Limits{KeyRPM: 5}}, 100); err != nil {
			t.Fatal(err)
		}
	})

	s.run(t, "AdjustOfAFreshBucket", func(t *testing.T, b *backend) {
		r := Request{Key: "k", Team: t.Name(), Tokens: 100, Limits: Limits{KeyRPM: 60, KeyTPM: 6000, TeamRPM: 600, TeamTPM: 60000}}
		if err := b.lim.Adjust(context.Background(), r, 1000); err != nil {
			t.Fatal(err)
		}
		res := allow(t, b.lim, r)
		if !res.Allowed || res.LimitRequests != 60 || res.LimitTokens != 6000 {
			t.Fatalf("%+v", res)
		}
		b.within(t, "RemainingRequests", res.RemainingRequests, 59, 1)
		b.within(t, "RemainingTokens", res.RemainingTokens, 4900, 100)
	})

	s.run(t, "RefillAfterWaiting", func(t *testing.T, b *backend) {
		r := Request{Key: t.Name(), Limits: Limits{KeyRPM: 600}} // 10 per second
		b.within(t, "admitted from full", drain(t, b.lim, r, 2000), 600, 10)
		b.advance(time.Second)
		b.start = time.Now()
		b.within(t, "admitted after 1 s", drain(t, b.lim, r, 2000), 10, 10)
		b.advance(350 * time.Millisecond)
		b.start = time.Now()
		b.within(t, "admitted after 350 ms", drain(t, b.lim, r, 2000), 3, 10)
	})

	s.run(t, "ResultFields", func(t *testing.T, b *backend) {
		r := Request{Key: "k", Team: t.Name(), Tokens: 1000,
			Limits: Limits{KeyRPM: 60, KeyTPM: 120000, TeamRPM: 120, TeamTPM: 600000}}
		res := allow(t, b.lim, r)
		if !res.Allowed || res.Refused != "" || res.RetryAfter != 0 || res.Degraded {
			t.Errorf("first request: %+v", res)
		}
		// The key's limits are the tighter ones (59 of 60 requests left
		// against 119 of 120; 119000 tokens against 599000).
		if res.LimitRequests != 60 || res.LimitTokens != 120000 {
			t.Errorf("limits %d/%d, want the key's 60/120000", res.LimitRequests, res.LimitTokens)
		}
		b.within(t, "RemainingRequests", res.RemainingRequests, 59, 1)
		b.within(t, "RemainingTokens", res.RemainingTokens, 119000, 2000)
		b.near(t, "ResetRequests", res.ResetRequests, time.Second)      // one request at 1 per second
		b.near(t, "ResetTokens", res.ResetTokens, 500*time.Millisecond) // 1000 tokens at 2000 per second
		n := drain(t, b.lim, r, 200)
		b.within(t, "admitted", n+1, 60, 1)
		res = allow(t, b.lim, r)
		if res.Allowed || res.Refused != RefusedKeyRPM || res.RemainingRequests != 0 || res.LimitRequests != 60 {
			t.Errorf("refusal: %+v", res)
		}
		if res.RetryAfter <= 0 || res.RetryAfter > time.Second {
			t.Errorf("RetryAfter = %v, want in (0, 1s]", res.RetryAfter)
		}
		if res.ResetRequests <= 59*time.Second || res.ResetRequests > 60*time.Second {
			t.Errorf("ResetRequests = %v, want just under 60s", res.ResetRequests)
		}
		// No limits at all: allowed, no headers.
		res = allow(t, b.lim, Request{Key: "free", Tokens: 100})
		if res != (Result{Allowed: true}) {
			t.Errorf("without limits: %+v", res)
		}
		// Team limits need a team.
		res = allow(t, b.lim, Request{Key: t.Name() + "-solo", Limits: Limits{TeamRPM: 1, TeamTPM: 1}})
		if res != (Result{Allowed: true}) {
			t.Errorf("team limits without a team: %+v", res)
		}
	})

	s.run(t, "LimitChangeKeepsTheTokens", func(t *testing.T, b *backend) {
		r := Request{Key: t.Name(), Limits: Limits{KeyRPM: 60}}
		b.within(t, "Remaining", allow(t, b.lim, r).RemainingRequests, 59, 1)
		r.Limits.KeyRPM = 120 // a reload raised it: 59 tokens, now under 120
		b.within(t, "Remaining after raise", allow(t, b.lim, r).RemainingRequests, 58, 2)
		r.Limits.KeyRPM = 30 // lowered: capped at the new capacity
		b.within(t, "Remaining after cut", allow(t, b.lim, r).RemainingRequests, 29, 0)
	})

	s.run(t, "LargeLimitsStayExact", func(t *testing.T, b *backend) {
		// 75 million is the largest limit whose units are exact whatever its
		// divisors; 1 billion exercises rounding (a multiple of 10^k).
		for _, limit := range []int64{75_000_001, 1_000_000_007, MaxLimit * 2} {
			r := Request{Key: fmt.Sprint(t.Name(), limit), Tokens: 1, Limits: Limits{KeyTPM: limit}}
			res := allow(t, b.lim, r)
			want := effectiveLimit(limit)
			if !res.Allowed || res.LimitTokens != want {
				t.Fatalf("limit %d: %+v", limit, res)
			}
			b.within(t, "RemainingTokens", res.RemainingTokens, want-1, float64(want)/60)
			r.Tokens = want - 1
			res = allow(t, b.lim, r)
			if !res.Allowed {
				t.Fatalf("limit %d: the last %d tokens refused", limit, want-1)
			}
			b.within(t, "RemainingTokens", res.RemainingTokens, 0, float64(want)/60)
		}
	})

	s.run(t, "BatchLinesGetOnlyTheirShare", func(t *testing.T, b *backend) {
		lim := Limits{KeyRPM: 10}
		batch := Request{Key: t.Name(), Limits: lim, Batch: true, Share: 0.5}
		live := Request{Key: t.Name(), Limits: lim}
		if n := drain(t, b.lim, batch, 20); n != 5 {
			t.Fatalf("batch lines admitted %d, want 5 (half of 10)", n)
		}
		res := allow(t, b.lim, batch)
		if res.Refused != RefusedBatchKeyRPM {
			t.Errorf("batch line refused by %q, want batch_key_rpm", res.Refused)
		}
		// One request of a 5 RPM batch bucket: 12 s.
		b.near(t, "RetryAfter", res.RetryAfter, 12*time.Second)
		// Interactive traffic keeps the other half.
		if n := drain(t, b.lim, live, 20); n != 5 {
			t.Fatalf("interactive requests admitted %d after the batch, want the 5 left", n)
		}
		if res := allow(t, b.lim, live); res.Refused != RefusedKeyRPM {
			t.Errorf("interactive request refused by %q, want key_rpm", res.Refused)
		}
	})

	s.run(t, "BatchLinesChargeTheSharedLimits", func(t *testing.T, b *backend) {
		lim := Limits{KeyRPM: 100, TeamRPM: 10, TeamTPM: 100000}
		live := Request{Key: "live", Team: t.Name(), Tokens: 1000, Limits: lim}
		batch := Request{Key: "bulk", Team: t.Name(), Tokens: 1000, Limits: lim, Batch: true, Share: 0.5}
		for i := range 8 {
			if !allow(t, b.lim, live).Allowed {
				t.Fatalf("interactive request %d refused", i+1)
			}
		}
		// The team's batch share is 5, but only 2 of its 10 are left.
		if n := drain(t, b.lim, batch, 20); n != 2 {
			t.Fatalf("batch lines admitted %d, want the team's 2 left", n)
		}
		res := allow(t, b.lim, batch)
		if res.Refused != RefusedTeamRPM {
			t.Errorf("refused by %q, want team_rpm", res.Refused)
		}
		// A refused batch line charged nothing, in either bucket: the
		// tightest token bucket is the team's batch share, 50000 less the
		// two lines admitted.
		b.within(t, "batch tokens left", res.RemainingTokens, 48000, 50000.0/60)
	})

	s.run(t, "BatchRefusalChargesNothing", func(t *testing.T, b *backend) {
		lim := Limits{KeyRPM: 60, KeyTPM: 10000}
		batch := Request{Key: t.Name(), Tokens: 2000, Limits: lim, Batch: true, Share: 0.5}
		// Batch TPM bucket 5000: two lines of 2000, the third refused by it.
		if n := drain(t, b.lim, batch, 10); n != 2 {
			t.Fatalf("admitted %d, want 2", n)
		}
		res := allow(t, b.lim, batch)
		if res.Refused != RefusedBatchKeyTPM {
			t.Fatalf("refused by %q, want batch_key_tpm", res.Refused)
		}
		// 1000 tokens missing at 5000/60 per second: 12 s.
		b.near(t, "RetryAfter", res.RetryAfter, 12*time.Second)
		// The key's own buckets lost nothing to the refusal: 6000 tokens
		// and 58 requests are left for interactive traffic.
		live := Request{Key: t.Name(), Tokens: 6000, Limits: lim}
		if res := allow(t, b.lim, live); !res.Allowed {
			t.Fatalf("interactive request for the 6000 tokens left refused by %q", res.Refused)
		}
	})

	s.run(t, "BatchLineAboveItsShareNeverFits", func(t *testing.T, b *backend) {
		batch := Request{Key: "k", Team: t.Name(), Tokens: 1550, Limits: Limits{TeamTPM: 3000}, Batch: true, Share: 0.5}
		res := allow(t, b.lim, batch)
		if res.Allowed || res.Refused != RefusedBatchTeamTPM || res.RetryAfter != 0 {
			t.Fatalf("%+v, want refused for good by batch_team_tpm", res)
		}
		// The same request fits interactively.
		batch.Batch = false
		if res := allow(t, b.lim, batch); !res.Allowed {
			t.Fatalf("interactive: %+v", res)
		}
	})

	s.run(t, "BatchAdjustCorrectsBatchBuckets", func(t *testing.T, b *backend) {
		r := Request{Key: t.Name(), Tokens: 1000, Limits: Limits{KeyTPM: 12000}, Batch: true, Share: 0.5} // batch: 6000, 100/s
		if n := drain(t, b.lim, r, 10); n != 6 {
			t.Fatalf("admitted %d, want 6", n)
		}
		if err := b.lim.Adjust(context.Background(), r, -2000); err != nil {
			t.Fatal(err)
		}
		if n := drain(t, b.lim, r, 10); n < 2 || (b.fake && n != 2) {
			t.Fatalf("admitted %d after a refund of 2000, want 2", n)
		}
	})

	s.run(t, "ConcurrentBatchBurstAdmitsExactlyTheShare", func(t *testing.T, b *backend) {
		const L = 40
		r := Request{Key: "k", Team: t.Name(), Tokens: 10, Batch: true, Share: 0.25,
			Limits: Limits{KeyRPM: 1000, TeamRPM: L, TeamTPM: 1_000_000}}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 2 * L {
			wg.Go(func() {
				res, err := b.lim.Allow(context.Background(), r)
				if err != nil {
					t.Error(err)
				}
				if res.Allowed {
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != L/4 {
			t.Errorf("admitted %d of %d concurrent batch lines, want exactly %d", got, 2*L, L/4)
		}
	})

	s.run(t, "ShareOutsideTheRangeAddsNoBuckets", func(t *testing.T, b *backend) {
		for _, share := range []float64{0, 1, 1.5} {
			r := Request{Key: fmt.Sprint(t.Name(), share), Limits: Limits{KeyRPM: 4}, Batch: true, Share: share}
			if n := drain(t, b.lim, r, 10); n != 4 {
				t.Errorf("share %v: admitted %d, want the whole 4", share, n)
			}
		}
	})

	s.run(t, "KeysWithoutTeamAreOwnBuckets", func(t *testing.T, b *backend) {
		name := t.Name()
		// A key without a team and a team of the same name do not meet.
		if n := drain(t, b.lim, Request{Key: name, Limits: Limits{KeyRPM: 3}}, 10); n != 3 {
			t.Fatalf("solo key admitted %d, want 3", n)
		}
		if n := drain(t, b.lim, Request{Key: name, Team: name, Limits: Limits{KeyRPM: 3}}, 10); n != 3 {
			t.Fatalf("team key admitted %d, want 3", n)
		}
		if n := drain(t, b.lim, Request{Key: "x", Team: name, Limits: Limits{TeamRPM: 2}}, 10); n != 2 {
			t.Fatalf("team admitted %d, want 2", n)
		}
	})
}
