package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// Memory is the embedded limiter, for one replica (no redis block in the
// config), and the fallback of Redis during an outage. All buckets of one
// decision live in one shard, chosen by the team (or by the key when it has
// no team), exactly as they share one hash slot in Redis: a decision takes one
// mutex and allocates nothing once its buckets exist.
//
// Buckets are kept per name and never evicted: names come from the config, so
// their number is bounded by it.
type Memory struct {
	seed   maphash.Seed
	shards [numShards]shard
}

const numShards = 64

type shard struct {
	mu    sync.Mutex
	teams map[string]*teamBuckets // by team name
	solo  map[string]*keyBuckets  // keys without a team, by key name
	stats Stats
	_     [64]byte // keep neighbouring shards' mutexes off one cache line
}

type teamBuckets struct {
	rpm, tpm bucket
	// brpm and btpm are the batch-only buckets (Request.Batch).
	brpm, btpm bucket
	keys       map[string]*keyBuckets
}

type keyBuckets struct{ rpm, tpm, brpm, btpm bucket }

// bucket is one limit's state; unit 0 means never charged (full).
type bucket struct{ lvl, ts, unit int64 }

// NewMemory returns an embedded limiter on the local clock (tests run it in
// a synctest bubble to move that clock).
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].teams = map[string]*teamBuckets{}
		m.shards[i].solo = map[string]*keyBuckets{}
	}
	return m
}

// Allow implements Limiter. It never fails.
func (m *Memory) Allow(_ context.Context, r Request) (Result, error) {
	pl := makePlan(&r)
	return m.allow(&r, &pl), nil
}

func (m *Memory) allow(r *Request, pl *plan) Result {
	now := time.Now().UnixMicro()
	sh := m.shard(r)
	sh.mu.Lock()
	var bs [numKinds]*bucket
	sh.buckets(r, pl, &bs)
	var st [numKinds]state
	var lv [numKinds]int64
	allowed := true
	for i := 0; i < pl.n; i++ {
		lv[i] = bs[i].level(now, &pl.p[i])
		var ok bool
		st[i], ok = check(lv[i], pl.cost[i], &pl.p[i])
		allowed = allowed && ok
	}
	if allowed {
		for i := 0; i < pl.n; i++ {
			p := &pl.p[i]
			lv[i] -= pl.cost[i] * p.unit
			*bs[i] = bucket{lvl: lv[i], ts: max(now, bs[i].ts), unit: p.unit}
			st[i] = charged(lv[i], p)
		}
	}
	sh.stats.Decisions++
	if !allowed {
		sh.stats.Refusals++
	}
	sh.mu.Unlock()
	return compose(pl, &st, allowed)
}

// Peek implements Peeker. It never fails.
func (m *Memory) Peek(_ context.Context, r Request) (Result, error) {
	pl := makePlan(&r)
	if pl.n == 0 {
		return Result{Allowed: true}, nil
	}
	now := time.Now().UnixMicro()
	sh := m.shard(&r)
	var st [numKinds]state
	sh.mu.Lock()
	var bs [numKinds]*bucket
	sh.buckets(&r, &pl, &bs)
	peekStates(&pl, &st, func(i int) int64 { return bs[i].level(now, &pl.p[i]) })
	sh.mu.Unlock()
	return compose(&pl, &st, true), nil
}

// Adjust implements Limiter. It never fails.
func (m *Memory) Adjust(_ context.Context, r Request, delta int64) error {
	pl := makePlan(&r).tpmOnly()
	if delta == 0 || pl.n == 0 {
		return nil
	}
	m.adjust(&r, &pl, delta)
	return nil
}

func (m *Memory) adjust(r *Request, pl *plan, delta int64) {
	now := time.Now().UnixMicro()
	sh := m.shard(r)
	sh.mu.Lock()
	var bs [numKinds]*bucket
	sh.buckets(r, pl, &bs)
	for i := 0; i < pl.n; i++ {
		p := &pl.p[i]
		lvl := adjusted(bs[i].level(now, p), delta, p)
		*bs[i] = bucket{lvl: lvl, ts: max(now, bs[i].ts), unit: p.unit}
	}
	sh.stats.Adjusts++
	sh.mu.Unlock()
}

// Stats implements Limiter.
func (m *Memory) Stats() Stats {
	var s Stats
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		s.Decisions += sh.stats.Decisions
		s.Refusals += sh.stats.Refusals
		s.Adjusts += sh.stats.Adjusts
		sh.mu.Unlock()
	}
	return s
}

// Close implements Limiter; it does nothing.
func (m *Memory) Close() error { return nil }

func (m *Memory) shard(r *Request) *shard {
	tag := r.Team
	if tag == "" {
		tag = r.Key
	}
	return &m.shards[maphash.String(m.seed, tag)%numShards]
}

// buckets fills bs with the buckets of pl, creating what is missing. The
// shard's mutex is held.
func (sh *shard) buckets(r *Request, pl *plan, bs *[numKinds]*bucket) {
	var kb *keyBuckets
	var tb *teamBuckets
	if r.Team != "" {
		tb = sh.teams[r.Team]
		if tb == nil {
			tb = &teamBuckets{keys: map[string]*keyBuckets{}}
			sh.teams[r.Team] = tb
		}
		kb = tb.keys[r.Key]
		if kb == nil {
			kb = &keyBuckets{}
			tb.keys[r.Key] = kb
		}
	} else {
		kb = sh.solo[r.Key]
		if kb == nil {
			kb = &keyBuckets{}
			sh.solo[r.Key] = kb
		}
	}
	for i := 0; i < pl.n; i++ {
		switch pl.kinds[i] {
		case keyRPM:
			bs[i] = &kb.rpm
		case keyTPM:
			bs[i] = &kb.tpm
		case teamRPM:
			bs[i] = &tb.rpm
		case teamTPM:
			bs[i] = &tb.tpm
		case batchKeyRPM:
			bs[i] = &kb.brpm
		case batchKeyTPM:
			bs[i] = &kb.btpm
		case batchTeamRPM:
			bs[i] = &tb.brpm
		case batchTeamTPM:
			bs[i] = &tb.btpm
		}
	}
}

// level is the bucket's level at now under p.
func (b *bucket) level(now int64, p *params) int64 {
	if b.unit == 0 {
		return p.cap
	}
	return level(b.lvl, b.ts, b.unit, now, p)
}
