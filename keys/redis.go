package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store shared by every replica. All its keys carry one hash
// tag, so that Redis Cluster keeps them on one slot and a change is one
// script; a change is announced on a channel (every replica's Directory
// listens), and its version lets a replica that missed the announcement
// see it at its next resync.
type Redis struct {
	c                                     redis.UniversalClient
	teams, keys, used, audit, version, ch string
	appliedPrefix, markPrefix             string
}

var _ Store = (*Redis)(nil)

// NewRedis is the store in c under prefix (redis.key_prefix). c is not
// closed by Close.
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	p := prefix + "{keys}:"
	return &Redis{c: c, teams: p + "teams", keys: p + "keys", used: p + "used", audit: p + "audit",
		version: p + "version", appliedPrefix: p + "applied:", markPrefix: p + "mark:", ch: prefix + "keys:changed"}
}

// applyScript makes one change and appends its event. The client may
// retry a call whose answer it lost: the event id makes a replay a no-op
// (and not a false "already exists").
var applyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[4]) == 1 then return tonumber(redis.call('GET', KEYS[3]) or '0') end
if ARGV[1] == 'create' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return -1 end
redis.call('SET', KEYS[4], '1', 'EX', 86400)
if ARGV[1] == 'del' then redis.call('HDEL', KEYS[1], ARGV[2]) else redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
redis.call('RPUSH', KEYS[2], ARGV[4])
return redis.call('INCR', KEYS[3])
`)

// touchScript keeps the latest use of each key.
var touchScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if cur < tonumber(ARGV[i+1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
return 0
`)

// Load implements Store, in one transaction.
func (s *Redis) Load(ctx context.Context) (*Data, error) {
	var teams, keys, used *redis.MapStringStringCmd
	var ver *redis.StringCmd
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		teams, keys, used = p.HGetAll(ctx, s.teams), p.HGetAll(ctx, s.keys), p.HGetAll(ctx, s.used)
		ver = p.Get(ctx, s.version)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("keys: load: %w", err)
	}
	d := newData()
	d.Version, _ = strconv.ParseInt(ver.Val(), 10, 64)
	for name, v := range teams.Val() {
		var t Team
		if json.Unmarshal([]byte(v), &t) == nil {
			d.Teams[name] = &t
		}
	}
	for id, v := range keys.Val() {
		var k Key
		if json.Unmarshal([]byte(v), &k) == nil {
			d.Keys[id] = &k
		}
	}
	for id, v := range used.Val() {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			d.Used[id] = n
		}
	}
	return d, nil
}

// Version implements Store.
func (s *Redis) Version(ctx context.Context) (int64, error) {
	v, err := s.c.Get(ctx, s.version).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("keys: version: %w", err)
	}
	return v, nil
}

// Apply implements Store.
func (s *Redis) Apply(ctx context.Context, c Change) error {
	op, hash, field := "put", s.teams, ""
	var value []byte
	var err error
	switch {
	case c.Team != nil:
		field = c.Team.Name
		value, err = json.Marshal(c.Team)
	case c.DeleteTeam != "":
		op, field = "del", c.DeleteTeam
	case c.Key != nil:
		hash, field = s.keys, c.Key.ID
		value, err = json.Marshal(c.Key)
	default:
		return errors.New("keys: empty change")
	}
	if err != nil {
		return err
	}
	if c.Create {
		op = "create"
	}
	ev, err := json.Marshal(c.Event)
	if err != nil {
		return err
	}
	n, err := applyScript.Run(ctx, s.c, []string{hash, s.audit, s.version, s.appliedPrefix + c.Event.ID},
		op, field, value, ev).Int64()
	if err != nil {
		return fmt.Errorf("keys: apply: %w", err)
	}
	if n < 0 {
		return ErrExists
	}
	// The change is stored: a lost announcement only delays the other
	// replicas until their resync.
	s.c.Publish(ctx, s.ch, n)
	return nil
}

// Touch implements Store.
func (s *Redis) Touch(ctx context.Context, used map[string]int64) error {
	args := make([]any, 0, 2*len(used))
	for id, t := range used {
		args = append(args, id, t)
	}
	if err := touchScript.Run(ctx, s.c, []string{s.used}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("keys: touch: %w", err)
	}
	return nil
}

// Audit implements Store.
func (s *Redis) Audit(ctx context.Context, limit int) ([]Event, error) {
	if limit <= 0 {
		return nil, nil
	}
	raw, err := s.c.LRange(ctx, s.audit, int64(-limit), -1).Result()
	if err != nil {
		return nil, fmt.Errorf("keys: audit: %w", err)
	}
	out := make([]Event, 0, len(raw))
	for i := len(raw) - 1; i >= 0; i-- {
		var e Event
		if json.Unmarshal([]byte(raw[i]), &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Mark implements Store.
func (s *Redis) Mark(ctx context.Context, id string, until time.Time) (bool, error) {
	args := redis.SetArgs{Mode: "NX"}
	if !until.IsZero() {
		args.ExpireAt = until
	}
	err := s.c.SetArgs(ctx, s.markPrefix+id, 1, args).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("keys: mark: %w", err)
	}
	return true, nil
}

// Watch implements Store. The subscription's confirmations count as
// changes too: Subscribe does not wait for Redis, so a change announced
// between the directory's first read and the subscription taking effect
// would otherwise wait for the next resync; and the client resubscribes
// after a lost connection by itself, confirming again, so what was
// announced while it was down is read at once as well.
func (s *Redis) Watch(ctx context.Context, changed func()) {
	sub := s.c.Subscribe(ctx, s.ch)
	defer sub.Close()
	msgs := sub.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-msgs:
			if !ok {
				return
			}
			changed()
		}
	}
}

// Close implements Store.
func (s *Redis) Close() error { return nil }
