package inflight

import (
	"math"
	"sync"
	"testing"
)

func TestBoundAdmitsUpToSize(t *testing.T) {
	b := New(100)
	h1 := b.Hold(60)
	if h1 == nil {
		t.Fatal("60 of 100 refused")
	}
	if h := b.Hold(41); h != nil {
		t.Fatal("60+41 of 100 admitted")
	}
	h2 := b.Hold(40)
	if h2 == nil {
		t.Fatal("60+40 of 100 refused")
	}
	if got := b.InUse(); got != 100 {
		t.Fatalf("in use %d, want 100", got)
	}
	h1.Release()
	h1.Release() // idempotent
	if got := b.InUse(); got != 40 {
		t.Fatalf("in use after release %d, want 40", got)
	}
	if h := b.Hold(60); h == nil {
		t.Fatal("40+60 of 100 refused after a release")
	}
}

func TestOversizedRequestServedAlone(t *testing.T) {
	b := New(100)
	big := b.Hold(1000)
	if big == nil {
		t.Fatal("a request larger than the bound is refused even with nothing held")
	}
	if h := b.Hold(1); h != nil {
		t.Fatal("admitted beside a request that already exceeds the bound")
	}
	big.Release()
	if b.InUse() != 0 {
		t.Fatalf("in use %d after release", b.InUse())
	}
}

func TestHostileSizesSaturate(t *testing.T) {
	b := New(math.MaxInt64 / 2)
	h := b.Hold(math.MaxInt64)
	if h == nil {
		t.Fatal("refused")
	}
	if b.Hold(math.MaxInt64) != nil {
		t.Fatal("a second MaxInt64 admitted: the sum wrapped")
	}
	if b.Hold(-5) == nil || b.InUse() != math.MaxInt64 {
		t.Fatalf("a negative claim changed the count: %d", b.InUse())
	}
}

func TestUnboundedAndNil(t *testing.T) {
	var nilb *Bytes
	if !nilb.TryAcquire(1 << 40) {
		t.Fatal("nil bound refused")
	}
	b := New(0)
	for range 10 {
		if b.Hold(1<<40) == nil {
			t.Fatal("unbounded refused")
		}
	}
	if b.InUse() != 10<<40 {
		t.Fatalf("unbounded does not count: %d", b.InUse())
	}
	var h *Hold
	h.Release()
}

func TestConcurrentNeverOverBound(t *testing.T) {
	const size = 1000
	b := New(size)
	var wg sync.WaitGroup
	var over sync.Once
	failed := false
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				if h := b.Hold(7); h != nil {
					if b.InUse() > size {
						over.Do(func() { failed = true })
					}
					h.Release()
				}
			}
		}()
	}
	wg.Wait()
	if failed {
		t.Fatal("the bytes in use went over the bound")
	}
	if b.InUse() != 0 {
		t.Fatalf("in use %d after every release", b.InUse())
	}
}

func TestPassOutlivesTheDeferredRelease(t *testing.T) {
	b := New(100)
	var body *Hold
	func() {
		h := b.Hold(70)
		defer h.Release()
		body = h.Pass()
	}()
	if b.InUse() != 70 {
		t.Fatalf("in use %d after the handler returned, want 70 held by the body", b.InUse())
	}
	body.Release()
	if b.InUse() != 0 {
		t.Fatalf("in use %d after the body released", b.InUse())
	}
	var nilHold *Hold
	if nilHold.Pass() != nil {
		t.Fatal("Pass of nil")
	}
}
