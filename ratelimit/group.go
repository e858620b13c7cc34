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
// A request alone goes at once, so a quiet gateway waits for nothing. A
// busy one pays, per group instead of per request, one write, one read and
// one wake-up of Redis on both sides, and one allow script per hash slot:
// the script decides the group's requests in the order they queued, as if
// each ran alone one after the other, over one clock reading, one read and
// one write of each bucket.
type group struct {
	l *Redis

	mu    sync.Mutex
	busy  bool // a pipeline is in flight (or being built)
	queue []*admission
	spare []*admission // the other buffer of queue, reused
}

// A Joiner adds a request's own commands, such as its budget reservation,
// to the pipeline that carries its admission (Redis.Admit).
type Joiner interface {
	// Join adds to p the commands of js: the joiners of the admissions
	// one pipeline carries, in the order they queued, the receiver first.
	// It is called once per pipeline, so that it can send the commands of
	// many requests together; joiners of other types among js are its to
	// pass on, each with itself alone.
	Join(p redis.Pipeliner, js []Joiner)
}

// JoinFunc is a Joiner that adds its commands on its own.
type JoinFunc func(p redis.Pipeliner)

// Join runs each of js alone.
func (JoinFunc) Join(p redis.Pipeliner, js []Joiner) {
	for _, j := range js {
		if f, ok := j.(JoinFunc); ok {
			f(p)
		} else {
			j.Join(p, []Joiner{j})
		}
	}
}

// admission is one request's part of a group.
type admission struct {
	r    Request
	d    *Pending
	also Joiner
	one  [1]Joiner // also, for its Join when it is alone
	// wake is sent true when the admission is to lead the next pipeline,
	// false when the pipeline that carried it ran.
	wake chan bool
}

var admissionPool = sync.Pool{New: func() any { return &admission{wake: make(chan bool, 1)} }}

// run decides r in d with the next pipeline, and returns once that
// pipeline ran. also's Join may run on another request's goroutine, when
// that request leads the group.
func (g *group) run(r Request, d *Pending, also Joiner) {
	a := admissionPool.Get().(*admission)
	a.r, a.d, a.also = r, d, also
	g.mu.Lock()
	g.queue = append(g.queue, a)
	if g.busy {
		g.mu.Unlock()
		if lead := <-a.wake; !lead {
			a.reset()
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

	g.lead(a, batch)
	a.reset()
}

// lead runs batch's pipeline, then wakes its admissions and hands the
// group to the next. It does so even when the pipeline panicked: otherwise
// every later admission would wait forever behind it. Those of the batch
// then decide alone.
func (g *group) lead(a *admission, batch []*admission) {
	ran := false
	defer func() {
		if !ran {
			for _, b := range batch {
				if b.d != nil {
					b.d.cmd = nil // never sent: Result decides alone
				}
			}
		}
		g.handOff(a, batch)
	}()
	g.exec(batch)
	ran = true
}

// handOff wakes the admissions of batch but a, and lets the next queued
// one lead, or marks the group idle.
func (g *group) handOff(a *admission, batch []*admission) {
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
}

func (a *admission) reset() {
	a.r, a.d, a.also, a.one[0] = Request{}, nil, nil, nil
	admissionPool.Put(a)
}

// groupScript is the allow script of the decisions of one hash slot.
type groupScript struct {
	slot  int
	keys  []any
	index map[string]int // key -> its place in keys, from 1
	argv  []any
	decs  []*Pending // in the order of the replies
}

// exec runs one pipeline for batch. Its context is none of the requests':
// a client that leaves must not fail the others' admissions; the client's
// timeouts bound it.
func (g *group) exec(batch []*admission) {
	l := g.l
	ctx := context.Background()
	p := l.client.Pipeline()
	if len(batch) == 1 {
		// A request alone: Queue's pooled arguments, no group to build.
		a := batch[0]
		l.Queue(ctx, p, a.r, a.d)
		if a.also != nil {
			a.one[0] = a.also
			a.also.Join(p, a.one[:])
		}
		if p.Len() > 0 {
			p.Exec(ctx)
		}
		return
	}
	var scripts []*groupScript
	for _, a := range batch {
		d := a.d
		if !l.prepare(a.r, d) {
			continue // decided alone by Result: no limit, or its slot is down
		}
		var gs *groupScript
		for _, s := range scripts {
			if s.slot == d.names.slot {
				gs = s
				break
			}
		}
		if gs == nil {
			gs = &groupScript{slot: d.names.slot, index: map[string]int{}, argv: []any{0}}
			scripts = append(scripts, gs)
		}
		d.idx = len(gs.decs)
		gs.decs = append(gs.decs, d)
		gs.argv = appendDecision(gs.argv, d.names, &d.pl, func(i int) any {
			name := d.names.key[d.pl.kinds[i]]
			k, ok := gs.index[name]
			if !ok {
				gs.keys = append(gs.keys, d.names.keyArg[d.pl.kinds[i]])
				k = len(gs.keys)
				gs.index[name] = k
			}
			return k
		})
	}
	for _, gs := range scripts {
		gs.argv[0] = len(gs.decs)
		var t []any
		if l.now != nil {
			l.appendTime(&t)
		}
		args := make([]any, 0, 3+len(gs.keys)+len(gs.argv)+len(t))
		args = append(append(append(append(args, argEvalSHA, l.scripts[0].sha, len(gs.keys)), gs.keys...), gs.argv...), t...)
		cmd := p.Do(ctx, args...)
		for _, d := range gs.decs {
			d.cmd = cmd
		}
	}
	var js []Joiner
	for _, a := range batch {
		if a.also != nil {
			js = append(js, a.also)
		}
	}
	if len(js) > 0 {
		js[0].Join(p, js)
	}
	if p.Len() > 0 {
		p.Exec(ctx)
	}
}
