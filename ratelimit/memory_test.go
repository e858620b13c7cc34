package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// clock is the time a limiter under test reads, and how a test moves it.
type clock interface {
	Now() time.Time
	Advance(d time.Duration)
}

// sleepClock is the clock Memory reads, moved by sleeping: at once in the
// synctest bubbles Memory's tests run in, nothing else in the bubble
// running; for real against Redis, whose clock is the server's.
type sleepClock struct{}

func (sleepClock) Now() time.Time          { return time.Now() }
func (sleepClock) Advance(d time.Duration) { time.Sleep(d) }

// fakeClock is a clock tests move by hand, for the scripts of Redis, which
// cannot run in a bubble.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestMemory(t *testing.T) {
	runSuite(t, suite{new: func(*testing.T) Limiter { return NewMemory() }, bubble: true})
}

func TestMemoryStats(t *testing.T) {
	m := NewMemory()
	r := Request{Key: "k", Tokens: 10, Limits: Limits{KeyRPM: 2, KeyTPM: 100}}
	for range 3 {
		allow(t, m, r)
	}
	m.Adjust(context.Background(), r, 5)
	m.Adjust(context.Background(), r, 0) // no-op
	want := Stats{Decisions: 3, Refusals: 1, Adjusts: 1}
	if got := m.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestMemoryAllowDoesNotAllocate: once a key's buckets exist, a decision
// allocates nothing.
func TestMemoryAllowDoesNotAllocate(t *testing.T) {
	m := NewMemory()
	r := Request{Key: "design-ci", Team: "design", Tokens: 1290,
		Limits: Limits{KeyRPM: 60, KeyTPM: 200000, TeamRPM: 600, TeamTPM: 2000000}}
	ctx := context.Background()
	m.Allow(ctx, r)
	if n := testing.AllocsPerRun(1000, func() { m.Allow(ctx, r) }); n != 0 {
		t.Errorf("Allow allocates %v times per decision, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.Adjust(ctx, r, 10) }); n != 0 {
		t.Errorf("Adjust allocates %v times, want 0", n)
	}
}

func TestEffectiveLimit(t *testing.T) {
	for _, tc := range []struct{ in, want int64 }{
		{1, 1}, {60, 60}, {7, 7}, {2_000_000, 2_000_000},
		{75_059_993, 75_059_993},       // largest limit exact whatever its divisors
		{75_059_999, 75_059_990},       // rounded to a multiple of 10
		{1_000_000_007, 1_000_000_000}, // rounded to a multiple of 10^k
		{MaxLimit + 1, 750_599_930_000_000},
	} {
		got := effectiveLimit(tc.in)
		if got != tc.want {
			t.Errorf("effectiveLimit(%d) = %d, want %d", tc.in, got, tc.want)
		}
		p := paramsFor(tc.in)
		if p.cap > maxUnits || p.cap != p.limit*p.unit || p.rate*minuteMicros != p.cap {
			t.Errorf("paramsFor(%d) = %+v: not exact", tc.in, p)
		}
	}
}

// TestLevelRefill: the level refills by rate per µs, exactly up to capacity.
func TestLevelRefill(t *testing.T) {
	p := paramsFor(7) // unit 60e6, rate 7 per µs, capacity 420e6
	for _, tc := range []struct{ lvl, el, want int64 }{
		{0, 0, 0},
		{0, 1, 7},
		{p.cap - 14, 1, p.cap - 7},
		{p.cap - 14, 2, p.cap},
		{p.cap - 15, 2, p.cap - 1}, // need/rate = 2: not yet full
		{p.cap - 15, 3, p.cap},
		{-p.cap, 120_000_000, p.cap},
		{p.cap, 1 << 40, p.cap},
	} {
		if got := level(tc.lvl, 1000, p.unit, 1000+tc.el, &p); got != tc.want {
			t.Errorf("level(%d) after %d µs = %d, want %d", tc.lvl, tc.el, got, tc.want)
		}
	}
}

func TestBatchLimits(t *testing.T) {
	l := Limits{KeyRPM: 30, KeyTPM: 1001, TeamRPM: 1, TeamTPM: 0}
	if got, want := BatchLimits(l, 0.5), (Limits{KeyRPM: 15, KeyTPM: 500, TeamRPM: 1}); got != want {
		t.Errorf("BatchLimits(0.5) = %+v, want %+v", got, want)
	}
	for _, s := range []float64{0, -1, 1, 2} {
		if got := BatchLimits(l, s); got != (Limits{}) {
			t.Errorf("BatchLimits(%v) = %+v, want none", s, got)
		}
	}
}

// TestMemoryBatchAllowDoesNotAllocate: batch decisions, with their eight
// buckets, allocate nothing either.
func TestMemoryBatchAllowDoesNotAllocate(t *testing.T) {
	m := NewMemory()
	r := Request{Key: "design-ci", Team: "design", Tokens: 1290, Batch: true, Share: 0.5,
		Limits: Limits{KeyRPM: 60, KeyTPM: 200000, TeamRPM: 600, TeamTPM: 2000000}}
	ctx := context.Background()
	m.Allow(ctx, r)
	if n := testing.AllocsPerRun(1000, func() { m.Allow(ctx, r) }); n != 0 {
		t.Errorf("Allow allocates %v times per batch decision, want 0", n)
	}
}
