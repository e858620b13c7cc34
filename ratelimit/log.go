package ratelimit

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// RedisLogger adapts logger for go-redis's internal messages (redis.SetLogger,
// which is global), at debug level: the limiter itself logs an outage once,
// while go-redis would print a line to stderr for each failed dial.
func RedisLogger(logger *zap.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{logger}
}

type redisLogger struct{ l *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := r.l.Check(zap.DebugLevel, "redis client"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}
