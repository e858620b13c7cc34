package ratelimit

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxGroup bounds the admissions one pipeline carries; more wait for the
// next.
const maxGroup = 256

// group sends the admissions of concurrent requests to Redis together, as
// a group commit: while one pipeline is in flight, the admissions that
// arrive queue, and when it returns the next pipeline carries all of them.
// A request alone goes at once, so a quiet gateway waits for nothing; a
// busy one pays one write, one read and one wake-up of Redis per group
// instead of per request, on both sides. Each admission still runs its own
// scripts, in the order they queued: the decisions are those of the same
// requests sent one after the other.
type group struct {
	client redis.UniversalClient

	mu    sync.Mutex
	busy  bool // a pipeline is in flight (or being built)
	queue []*admission
	spare []*admission // the other buffer of queue, reused
}

// admission is one request's part of a group.
type admission struct {
	queue func(redis.Pipeliner)
	// wake is sent true when the admission is to lead the next pipeline,
	// false when the pipeline that carried it ran.
	wake chan bool
}

var admissionPool = sync.Pool{New: func() any { return &admission{wake: make(chan bool, 1)} }}

// run adds the commands queue adds to the next pipeline and returns once
// that pipeline ran (each command holds its own reply or error). queue is
// called on another request's goroutine when that request leads the group.
func (g *group) run(queue func(redis.Pipeliner)) {
	a := admissionPool.Get().(*admission)
	a.queue = queue
	g.mu.Lock()
	g.queue = append(g.queue, a)
	if g.busy {
		g.mu.Unlock()
		if lead := <-a.wake; !lead {
			a.queue = nil
			admissionPool.Put(a)
			return
		}
		g.mu.Lock()
	}
	// This admission leads: it sends what is queued, itself first.
	g.busy = true
	batch := g.queue
	if len(batch) > maxGroup {
		g.queue = append(g.spare[:0], batch[maxGroup:]...)
		batch = batch[:maxGroup]
	} else {
		g.queue = g.spare[:0]
	}
	g.spare = nil
	g.mu.Unlock()

	g.exec(batch)
	for _, b := range batch {
		if b != a {
			b.wake <- false // b is its owner's again: not touched after this
		}
	}
	clear(batch)
	g.mu.Lock()
	g.spare = batch[:0]
	var next *admission
	if len(g.queue) > 0 {
		next = g.queue[0]
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	if next != nil {
		next.wake <- true
	}
	a.queue = nil
	admissionPool.Put(a)
}

// exec runs one pipeline for batch. Its context is none of the requests':
// a client that leaves must not fail the others' admissions; the client's
// timeouts bound it.
func (g *group) exec(batch []*admission) {
	p := g.client.Pipeline()
	for _, b := range batch {
		b.queue(p)
	}
	if p.Len() > 0 {
		p.Exec(context.Background())
	}
}
