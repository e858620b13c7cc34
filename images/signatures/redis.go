package signatures

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store of replicas sharing Redis: one string key per image
// key, <prefix>sig:<key>, expiring with the signature. Commands go in one
// pipeline of single-key commands, which Redis Cluster splits by slot (an
// MGET across slots would be refused).
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis returns the Redis store over c, with keys under prefix
// (redis.key_prefix). The caller owns c.
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	return &Redis{c: c, prefix: prefix + "sig:"}
}

// Put implements Store.
func (r *Redis) Put(ctx context.Context, keys []Key, sig []byte, ttl time.Duration) error {
	if len(sig) > MaxSignatureBytes {
		return ErrTooLarge
	}
	if ttl <= 0 || len(sig) == 0 || len(keys) == 0 {
		return nil
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Set(ctx, r.prefix+string(k), sig, ttl)
		}
		return nil
	})
	return err
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, keys []Key) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, r.prefix+string(k))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for i, c := range cmds {
		b, err := c.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, err
		default:
			out[i] = b
		}
	}
	return out, nil
}
