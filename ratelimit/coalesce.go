package ratelimit

import (
	"context"
	"errors"
	"sync"
	"time"

	"nanogate/internal/safemath"
)

// Coalescing wraps a limiter so that TPM corrections (Adjust) are summed per
// key and team and sent every interval, instead of one round trip per
// request: a correction is never urgent (it lands after the answer anyway),
// and on Redis it was a script call per request. Allow is passed through.
// Close sends what is pending, then closes the wrapped limiter.
type Coalescing struct {
	Limiter
	interval time.Duration
	mu       sync.Mutex
	pending  map[adjustKey]*pendingAdjust
	stop     chan struct{}
	done     chan struct{}
}

// adjustKey groups the corrections that go to the same buckets: a batch
// line's also go to its batch-only buckets, so they are never summed with
// an interactive request's.
type adjustKey struct {
	key, team string
	limits    Limits
	batch     bool
	share     float64
}

type pendingAdjust struct {
	req   Request
	delta int64
}

// NewCoalescing returns lim with Adjust calls coalesced over interval.
func NewCoalescing(lim Limiter, interval time.Duration) *Coalescing {
	c := &Coalescing{Limiter: lim, interval: interval, pending: map[adjustKey]*pendingAdjust{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.loop()
	return c
}

// Adjust adds delta to what will be sent for r's key and team. It never
// blocks on the backend.
func (c *Coalescing) Adjust(_ context.Context, r Request, delta int64) error {
	if delta == 0 {
		return nil
	}
	k := adjustKey{r.Key, r.Team, r.Limits, r.Batch, r.Share}
	c.mu.Lock()
	p := c.pending[k]
	if p == nil {
		p = &pendingAdjust{req: r}
		c.pending[k] = p
	}
	p.delta = safemath.Add(p.delta, delta) // a debt and a refund of extreme sizes must not wrap into each other
	c.mu.Unlock()
	return nil
}

func (c *Coalescing) loop() {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.flush()
		case <-c.stop:
			c.flush()
			return
		}
	}
}

// flush sends the summed corrections.
func (c *Coalescing) flush() {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return
	}
	batch := c.pending
	c.pending = make(map[adjustKey]*pendingAdjust, len(batch))
	c.mu.Unlock()
	for _, p := range batch {
		if p.delta == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Limiter.Adjust(ctx, p.req, p.delta)
		cancel()
	}
}

// Close sends pending corrections and closes the wrapped limiter.
func (c *Coalescing) Close() error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	return c.Limiter.Close()
}

// Unwrap returns the wrapped limiter.
func (c *Coalescing) Unwrap() Limiter { return c.Limiter }

// Peek implements Peeker when the wrapped limiter does: the corrections
// still pending are not in its figures.
func (c *Coalescing) Peek(ctx context.Context, r Request) (Result, error) {
	if p, ok := c.Limiter.(Peeker); ok {
		return p.Peek(ctx, r)
	}
	return Result{}, errors.ErrUnsupported
}

// Ping asks the wrapped limiter's backend, when it has one (Redis).
func (c *Coalescing) Ping(ctx context.Context) error {
	if p, ok := c.Limiter.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}
