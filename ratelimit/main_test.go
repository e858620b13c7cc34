package ratelimit

import (
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	// go-redis prints each failed dial of the outage tests to stderr.
	redis.SetLogger(RedisLogger(zap.NewNop()))
	os.Exit(m.Run())
}
