// Package inflight bounds the bytes the requests in flight may hold at once,
// so that a burst of large answers is refused at the door (503 with a retry
// delay) instead of growing the heap until the container is killed.
//
// The bound is an admission decision, not a wait: a request that does not fit
// is answered at once, because queueing it would hold its connection and its
// request body anyway, and the client's SDK already knows how to retry a 503.
package inflight

import (
	"sync/atomic"

	"nanogate/internal/safemath"
)

// Bytes is a bound on the bytes held by requests in flight. The zero value
// and a nil *Bytes admit everything. Safe for concurrent use.
type Bytes struct {
	size int64 // 0: unbounded
	used atomic.Int64
}

// New returns a bound of size bytes; size <= 0 admits everything (the
// bytes are still counted, for the metric).
func New(size int64) *Bytes {
	return &Bytes{size: max(size, 0)}
}

// Size is the bound, 0 when there is none.
func (b *Bytes) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// InUse is the bytes held now.
func (b *Bytes) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// TryAcquire claims n bytes when they fit under the bound and reports
// whether it did. A request larger than the whole bound is still admitted
// when nothing else is held, so that one request the bound cannot fit is
// served alone rather than refused forever.
func (b *Bytes) TryAcquire(n int64) bool {
	if b == nil {
		return true
	}
	if n <= 0 {
		return true
	}
	for {
		used := b.used.Load()
		next := safemath.Add(used, n)
		if b.size > 0 && next > b.size && used > 0 {
			return false
		}
		if b.used.CompareAndSwap(used, next) {
			return true
		}
	}
}

// Release gives back n bytes claimed by TryAcquire.
func (b *Bytes) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.used.Add(-n)
}

// Hold is one request's claim. Release is idempotent, so that a handler
// can release on every path and still hand the claim to a response body
// that releases it when written.
type Hold struct {
	b *Bytes
	n atomic.Int64
}

// Hold claims n bytes for one request; nil when they do not fit.
func (b *Bytes) Hold(n int64) *Hold {
	n = max(n, 0)
	if !b.TryAcquire(n) {
		return nil
	}
	h := &Hold{b: b}
	h.n.Store(n)
	return h
}

// Release gives the claim back once; later calls do nothing. Safe on nil.
func (h *Hold) Release() {
	if h == nil {
		return
	}
	if n := h.n.Swap(0); n > 0 {
		h.b.Release(n)
	}
}

// Pass moves the claim to a new Hold, leaving h empty: a handler that
// releases h on its way out (defer) hands the claim to the response body,
// which outlives the handler, without releasing it early.
func (h *Hold) Pass() *Hold {
	if h == nil {
		return nil
	}
	p := &Hold{b: h.b}
	p.n.Store(h.n.Swap(0))
	return p
}
