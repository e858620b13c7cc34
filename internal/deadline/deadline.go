// Package deadline gives an upstream attempt its deadline without arming a
// timer until something waits on it.
//
// context.WithTimeout costs a timer, a child registration in the parent and
// about ten allocations per attempt, and the gateway makes an attempt per
// request. The upstream client does not need the timer: it sets the
// attempt's deadline on the connection itself, and only needs the parent's
// cancellation (the client went away). A Ctx is therefore a full
// context.Context whose Done arms a real context.WithDeadline the first time
// it is called (so any code that waits on it sees the deadline), while code
// that knows better asks Unarmed for the parent to watch instead.
package deadline

import (
	"context"
	"sync"
	"time"
)

// Ctx is a context with a deadline and no timer until Done is called.
type Ctx struct {
	parent context.Context
	d      time.Time

	mu       sync.Mutex
	timer    context.Context // armed by Done
	cancel   context.CancelFunc
	released bool // Release was called: done as if cancelled
}

// With returns a context that expires after timeout, or at parent's own
// deadline when that comes first.
func With(parent context.Context, timeout time.Duration) *Ctx {
	d := time.Now().Add(timeout)
	if pd, ok := parent.Deadline(); ok && pd.Before(d) {
		d = pd
	}
	return &Ctx{parent: parent, d: d}
}

type key struct{}

// Deadline implements context.Context.
func (c *Ctx) Deadline() (time.Time, bool) { return c.d, true }

// Done implements context.Context: the first call arms the timer.
func (c *Ctx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer == nil {
		c.timer, c.cancel = context.WithDeadline(c.parent, c.d)
		if c.released {
			c.cancel()
		}
	}
	return c.timer.Done()
}

// Err implements context.Context.
func (c *Ctx) Err() error {
	c.mu.Lock()
	t, released := c.timer, c.released
	c.mu.Unlock()
	if t != nil {
		return t.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if released {
		return context.Canceled
	}
	if !time.Now().Before(c.d) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value implements context.Context.
func (c *Ctx) Value(k any) any {
	if k == (key{}) {
		return c
	}
	return c.parent.Value(k)
}

// Release ends the context as its cancel function would: an armed timer
// stops, and Err reports context.Canceled. A context that outlives its
// attempt (its answer is still being read) need not be released: an armed
// timer is a child of the parent and stops when the parent ends.
func (c *Ctx) Release() {
	c.mu.Lock()
	c.released = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Unarmed reports, for a ctx derived from a Ctx by values alone whose timer
// is not armed, the context whose end cancels ctx: its parent. A caller
// that enforces the deadline itself (on a connection) watches that instead
// and leaves the timer unarmed. ok is false for any other ctx.
func Unarmed(ctx context.Context) (parent context.Context, ok bool) {
	c, _ := ctx.Value(key{}).(*Ctx)
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	armed := c.timer != nil
	c.mu.Unlock()
	if armed {
		return nil, false
	}
	return c.parent, true
}
