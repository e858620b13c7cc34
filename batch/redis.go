package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store shared by every replica. The keys of one batch share
// the batch's hash tag, so that its scripts run on one Redis Cluster node:
//
//	<prefix>batch:{<id>}        hash: state (JSON), total, completed, failed, skipped, dropped
//	<prefix>batch:{<id>}:q      stream of its lines (fields l, o, n), consumer group "w"
//	<prefix>batch:{<id>}:r      hash: line -> kind and output line, the results
//	<prefix>batch:{<id>}:lock   the finalization lock
//
// plus the indexes <prefix>batch:index and <prefix>batch:owner:<owner>
// (sorted sets of ids, ordered by id, that is by creation), the set
// <prefix>batch:active and <prefix>batch:finished, final batches by the time
// they ended (Unix seconds), which SweepFinished reads.
//
// Each replica reads lines with XREADGROUP as its own consumer; a line stays
// pending until its result is written, and the result and the
// acknowledgement are one script (Done), so a line is acknowledged only
// with its result. Pending lines of a consumer that stopped touching them
// (XCLAIM ... JUSTID, Touch) are taken over by another with XAUTOCLAIM
// (Reclaim).
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// group is the consumer group of every batch's stream.
const group = "w"

// NewRedis returns a Store on c, its keys starting with prefix.
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	return &Redis{c: c, prefix: prefix}
}

func (s *Redis) key(id string) string     { return s.prefix + "batch:{" + id + "}" }
func (s *Redis) queue(id string) string   { return s.key(id) + ":q" }
func (s *Redis) results(id string) string { return s.key(id) + ":r" }
func (s *Redis) lock(id string) string    { return s.key(id) + ":lock" }
func (s *Redis) index() string            { return s.prefix + "batch:index" }
func (s *Redis) active() string           { return s.prefix + "batch:active" }
func (s *Redis) owner(o string) string    { return s.prefix + "batch:owner:" + o }
func (s *Redis) finished() string         { return s.prefix + "batch:finished" }

var stateFields = []string{"state", "total", "completed", "failed", "skipped"}

func parseBatch(vals []any) (*Batch, error) {
	if len(vals) != len(stateFields) || vals[0] == nil {
		return nil, ErrNotFound
	}
	raw, _ := vals[0].(string)
	b, err := decodeState([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("batch store: state: %w", err)
	}
	n := func(v any) int64 {
		s, _ := v.(string)
		i, _ := strconv.ParseInt(s, 10, 64)
		return i
	}
	b.Counts = Counts{Total: n(vals[1]), Completed: n(vals[2]), Failed: n(vals[3]), Skipped: n(vals[4])}
	return b, nil
}

// Create implements Store.
func (s *Redis) Create(ctx context.Context, b *Batch, lines []Span) error {
	v := *b
	status := v.Status
	k := s.key(b.ID)
	if Final(status) {
		// Failed validation: nothing to run.
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, k, "state", encodeState(&v), "total", 0, "completed", 0, "failed", 0, "skipped", 0, "dropped", 1)
			p.ZAdd(ctx, s.index(), redis.Z{Member: b.ID})
			p.ZAdd(ctx, s.owner(b.Owner), redis.Z{Member: b.ID})
			p.ZAdd(ctx, s.finished(), redis.Z{Member: b.ID, Score: float64(endedAt(&v))})
			return nil
		})
		if err != nil {
			return fmt.Errorf("batch store: create %s: %w", b.ID, err)
		}
		return nil
	}
	v.Status = StatusValidating
	if err := s.c.HSet(ctx, k, "state", encodeState(&v), "total", len(lines), "completed", 0,
		"failed", 0, "skipped", 0).Err(); err != nil {
		return fmt.Errorf("batch store: create %s: %w", b.ID, err)
	}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.index(), redis.Z{Member: b.ID})
		p.ZAdd(ctx, s.owner(b.Owner), redis.Z{Member: b.ID})
		p.SAdd(ctx, s.active(), b.ID)
		p.XGroupCreateMkStream(ctx, s.queue(b.ID), group, "0")
		return nil
	})
	if err != nil {
		return fmt.Errorf("batch store: create %s: %w", b.ID, err)
	}
	const chunk = 1000
	for from := 0; from < len(lines); from += chunk {
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := from; i < min(from+chunk, len(lines)); i++ {
				p.XAdd(ctx, &redis.XAddArgs{Stream: s.queue(b.ID), Values: []any{
					"l", i, "o", lines[i].Off, "n", lines[i].Len}})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("batch store: queue the lines of %s: %w", b.ID, err)
		}
	}
	v.Status = status
	if err := s.c.HSet(ctx, k, "state", encodeState(&v)).Err(); err != nil {
		return fmt.Errorf("batch store: create %s: %w", b.ID, err)
	}
	return nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, id string) (*Batch, error) {
	vals, err := s.c.HMGet(ctx, s.key(id), stateFields...).Result()
	if err != nil {
		return nil, fmt.Errorf("batch store: get %s: %w", id, err)
	}
	return parseBatch(vals)
}

// List implements Store.
func (s *Redis) List(ctx context.Context, owner, after string, limit int) ([]*Batch, bool, error) {
	idx := s.index()
	if owner != "" {
		idx = s.owner(owner)
	}
	top := "+"
	if after != "" {
		top = "(" + after
	}
	ids, err := s.c.ZRevRangeByLex(ctx, idx, &redis.ZRangeBy{Max: top, Min: "-", Count: int64(limit) + 1}).Result()
	if err != nil {
		return nil, false, fmt.Errorf("batch store: list: %w", err)
	}
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	if len(ids) > 0 {
		// One command per key: a pipeline works on a cluster too.
		_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HMGet(ctx, s.key(id), stateFields...)
			}
			return nil
		})
		if err != nil {
			return nil, false, fmt.Errorf("batch store: list: %w", err)
		}
	}
	out := make([]*Batch, 0, len(ids))
	for _, c := range cmds {
		if b, err := parseBatch(c.Val()); err == nil {
			out = append(out, b)
		}
	}
	return out, more, nil
}

// Update implements Store: an optimistic transaction on the batch's hash,
// retried when a line's count changed it meanwhile.
func (s *Redis) Update(ctx context.Context, id string, fn func(b *Batch) bool) (*Batch, error) {
	k := s.key(id)
	var out *Batch
	for range 100 {
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.HMGet(ctx, k, stateFields...).Result()
			if err != nil {
				return err
			}
			b, err := parseBatch(vals)
			if err != nil {
				return err
			}
			counts := b.Counts
			if !fn(b) {
				b.Counts, out = counts, b
				return nil
			}
			b.Counts = counts
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, k, "state", encodeState(b))
				if Final(b.Status) {
					p.SRem(ctx, s.active(), id)
					p.ZAdd(ctx, s.finished(), redis.Z{Member: id, Score: float64(endedAt(b))})
				}
				return nil
			})
			out = b
			return err
		}, k)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("batch store: update %s: %w", id, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("batch store: update %s: too much contention", id)
}

// Active implements Store.
func (s *Redis) Active(ctx context.Context) ([]string, error) {
	ids, err := s.c.SMembers(ctx, s.active()).Result()
	if err != nil {
		return nil, fmt.Errorf("batch store: active: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

func tasksOf(id string, msgs []redis.XMessage) []Task {
	out := make([]Task, 0, len(msgs))
	for _, m := range msgs {
		n := func(f string) int64 {
			s, _ := m.Values[f].(string)
			v, _ := strconv.ParseInt(s, 10, 64)
			return v
		}
		if m.Values == nil {
			continue
		}
		out = append(out, Task{Batch: id, Line: int(n("l")), Span: Span{Off: n("o"), Len: int(n("n"))}, ref: m.ID})
	}
	return out
}

// Take implements Store.
func (s *Redis) Take(ctx context.Context, id, consumer string, n int) ([]Task, error) {
	res, err := s.c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: consumer,
		Streams: []string{s.queue(id), ">"}, Count: int64(n), Block: -1}).Result()
	if errors.Is(err, redis.Nil) || (err != nil && strings.HasPrefix(err.Error(), "NOGROUP")) {
		return nil, nil // nothing new, or the batch's queue is gone
	}
	if err != nil {
		return nil, fmt.Errorf("batch store: take from %s: %w", id, err)
	}
	var out []Task
	for _, st := range res {
		out = append(out, tasksOf(id, st.Messages)...)
	}
	return out, nil
}

// Reclaim implements Store.
func (s *Redis) Reclaim(ctx context.Context, id, consumer string, idle time.Duration, n int) ([]Task, error) {
	msgs, _, err := s.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: s.queue(id), Group: group,
		MinIdle: idle, Start: "0-0", Count: int64(n), Consumer: consumer}).Result()
	if errors.Is(err, redis.Nil) || (err != nil && strings.HasPrefix(err.Error(), "NOGROUP")) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batch store: reclaim from %s: %w", id, err)
	}
	return tasksOf(id, msgs), nil
}

// touchScript resets the idle time of the entries ARGV[3..] of stream
// KEYS[1] that consumer ARGV[2] of group ARGV[1] still owns; an entry another
// consumer reclaimed meanwhile stays with it.
var touchScript = redis.NewScript(`
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
`)

// Touch implements Store.
func (s *Redis) Touch(ctx context.Context, consumer string, tasks []Task) error {
	by := map[string][]any{}
	for _, t := range tasks {
		if t.ref != "" {
			by[t.Batch] = append(by[t.Batch], t.ref)
		}
	}
	var errs []error
	for id, refs := range by {
		args := append([]any{group, consumer}, refs...)
		if err := touchScript.Run(ctx, s.c, []string{s.queue(id)}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("batch store: touch: %w", err)
	}
	return nil
}

// HasResult implements Store.
func (s *Redis) HasResult(ctx context.Context, t Task) (bool, error) {
	ok, err := s.c.HExists(ctx, s.results(t.Batch), strconv.Itoa(t.Line)).Result()
	if err != nil {
		return false, fmt.Errorf("batch store: result of %s line %d: %w", t.Batch, t.Line, err)
	}
	return ok, nil
}

// doneScript records a line's outcome once and acknowledges its entry, in
// one step: a line is never acknowledged without its result. A batch whose
// queue and results were dropped (finalized) takes no more outcomes.
//
// KEYS: batch hash, results, stream. ARGV: line, kind, output line, entry id
// ("" when none), group. Returns total, completed, failed, skipped.
var doneScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'dropped') == 0 then
  if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2] .. ARGV[3]) == 1 then
    local f = 'skipped'
    if ARGV[2] == 'c' then f = 'completed' elseif ARGV[2] == 'f' then f = 'failed' end
    redis.call('HINCRBY', KEYS[1], f, 1)
  end
end
if ARGV[4] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[5], ARGV[4])
  redis.call('XDEL', KEYS[3], ARGV[4])
end
return redis.call('HMGET', KEYS[1], 'total', 'completed', 'failed', 'skipped')
`)

// Done implements Store.
func (s *Redis) Done(ctx context.Context, t Task, kind Outcome, line []byte) (Counts, error) {
	v, err := doneScript.Run(ctx, s.c, []string{s.key(t.Batch), s.results(t.Batch), s.queue(t.Batch)},
		t.Line, string(kind), line, t.ref, group).Slice()
	if err != nil {
		return Counts{}, fmt.Errorf("batch store: done %s line %d: %w", t.Batch, t.Line, err)
	}
	n := func(i int) int64 {
		if i >= len(v) {
			return 0
		}
		s, _ := v[i].(string)
		x, _ := strconv.ParseInt(s, 10, 64)
		return x
	}
	return Counts{Total: n(0), Completed: n(1), Failed: n(2), Skipped: n(3)}, nil
}

// Ack implements Store.
func (s *Redis) Ack(ctx context.Context, t Task) error {
	if t.ref == "" {
		return nil
	}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, s.queue(t.Batch), group, t.ref)
		p.XDel(ctx, s.queue(t.Batch), t.ref)
		return nil
	})
	if err != nil {
		return fmt.Errorf("batch store: ack %s line %d: %w", t.Batch, t.Line, err)
	}
	return nil
}

// Results implements Store.
func (s *Redis) Results(ctx context.Context, id string, fn func(kind Outcome, line []byte) error) error {
	var cursor uint64
	for {
		kv, next, err := s.c.HScan(ctx, s.results(id), cursor, "*", 200).Result()
		if err != nil {
			return fmt.Errorf("batch store: results of %s: %w", id, err)
		}
		for i := 1; i < len(kv); i += 2 {
			v := kv[i]
			if v == "" {
				continue
			}
			if err := fn(Outcome(v[0]), []byte(v[1:])); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// Drop implements Store.
func (s *Redis) Drop(ctx context.Context, id string) error {
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.key(id), "dropped", 1)
		p.Del(ctx, s.results(id))
		p.Del(ctx, s.queue(id))
		p.SRem(ctx, s.active(), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("batch store: drop %s: %w", id, err)
	}
	return nil
}

// SweepFinished implements Store. The indexes go first and the finished
// entry last, so a sweep cut short is finished by the next one.
func (s *Redis) SweepFinished(ctx context.Context, before time.Time) (int, error) {
	n := 0
	for range 100 {
		ids, err := s.c.ZRangeByScore(ctx, s.finished(), &redis.ZRangeBy{Min: "-inf",
			Max: "(" + strconv.FormatInt(before.Unix(), 10), Count: 200}).Result()
		if err != nil {
			return n, fmt.Errorf("batch store: sweep: %w", err)
		}
		for _, id := range ids {
			b, err := s.Get(ctx, id)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return n, err
			}
			_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, s.index(), id)
				if b != nil {
					p.ZRem(ctx, s.owner(b.Owner), id)
				}
				p.SRem(ctx, s.active(), id)
				p.Del(ctx, s.key(id), s.queue(id), s.results(id), s.lock(id))
				p.ZRem(ctx, s.finished(), id)
				return nil
			})
			if err != nil {
				return n, fmt.Errorf("batch store: sweep %s: %w", id, err)
			}
			if b != nil {
				n++
			}
		}
		if len(ids) < 200 {
			return n, nil
		}
	}
	return n, nil
}

var lockScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
`)

// Lock implements Store.
func (s *Redis) Lock(ctx context.Context, id, holder string, ttl time.Duration) (bool, error) {
	n, err := lockScript.Run(ctx, s.c, []string{s.lock(id)}, holder, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("batch store: lock %s: %w", id, err)
	}
	return n == 1, nil
}

// Unlock implements Store.
func (s *Redis) Unlock(ctx context.Context, id, holder string) error {
	if err := unlockScript.Run(ctx, s.c, []string{s.lock(id)}, holder).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("batch store: unlock %s: %w", id, err)
	}
	return nil
}

// Close implements Store; the client is the caller's.
func (s *Redis) Close() error { return nil }
