package ratelimit

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type countingLimiter struct {
	Limiter
	mu     sync.Mutex
	calls  int
	deltas map[string]int64
}

func (c *countingLimiter) Adjust(_ context.Context, r Request, d int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	k := r.Key + "/" + r.Team
	if r.Batch {
		k += "/batch"
	}
	c.deltas[k] += d
	return nil
}

func TestCoalescingSumsAdjustsPerKeyAndTeam(t *testing.T) {
	inner := &countingLimiter{Limiter: NewMemory(), deltas: map[string]int64{}}
	c := NewCoalescing(inner, time.Hour) // only Close flushes
	a := Request{Key: "k1", Team: "t", Limits: Limits{KeyTPM: 100}}
	b := Request{Key: "k2", Team: "t", Limits: Limits{KeyTPM: 100}}
	for i := 0; i < 100; i++ {
		c.Adjust(context.Background(), a, 3)
		c.Adjust(context.Background(), b, -1)
	}
	c.Adjust(context.Background(), a, 0)
	if inner.calls != 0 {
		t.Fatal("Adjust reached the backend before a flush")
	}
	c.Close()
	if inner.calls != 2 || inner.deltas["k1/t"] != 300 || inner.deltas["k2/t"] != -100 {
		t.Fatalf("calls %d deltas %v", inner.calls, inner.deltas)
	}
}

func TestCoalescingFlushesOnItsInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner := &countingLimiter{Limiter: NewMemory(), deltas: map[string]int64{}}
		c := NewCoalescing(inner, 10*time.Millisecond)
		defer c.Close()
		sent := func() int64 {
			synctest.Wait()
			inner.mu.Lock()
			defer inner.mu.Unlock()
			return inner.deltas["k/"]
		}
		c.Adjust(context.Background(), Request{Key: "k"}, 5)
		sleepClock{}.Advance(9 * time.Millisecond)
		if n := sent(); n != 0 {
			t.Fatalf("%d sent before the interval", n)
		}
		sleepClock{}.Advance(time.Millisecond)
		if n := sent(); n != 5 {
			t.Fatalf("%d sent once the interval passed, want 5", n)
		}
	})
}

// TestCoalescingKeepsBatchCorrectionsApart: a batch line's correction also
// goes to its batch-only buckets; an interactive request's of the same key
// must not.
func TestCoalescingKeepsBatchCorrectionsApart(t *testing.T) {
	inner := &countingLimiter{Limiter: NewMemory(), deltas: map[string]int64{}}
	c := NewCoalescing(inner, time.Hour)
	live := Request{Key: "k", Team: "t", Limits: Limits{KeyTPM: 100}}
	batch := live
	batch.Batch, batch.Share = true, 0.5
	c.Adjust(context.Background(), live, 7)
	c.Adjust(context.Background(), batch, -3)
	c.Close()
	if inner.deltas["k/t"] != 7 || inner.deltas["k/t/batch"] != -3 {
		t.Fatalf("deltas %v", inner.deltas)
	}
}
