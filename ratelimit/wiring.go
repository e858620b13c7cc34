package ratelimit

import (
	"time"

	"go.uber.org/zap"

	"nanogate/config"
)

// New returns the limiter cfg asks for: embedded (Memory) without a redis
// block, else Redis on a client from NewClient.
func New(cfg *config.Config, logger *zap.Logger) Limiter {
	if cfg.Redis == nil {
		return NewMemory()
	}
	return NewRedis(NewClient(*cfg.Redis), *cfg.Redis, logger)
}

// LimitsOf returns the limits of key k, whose team is t (nil for a key
// without a team).
func LimitsOf(k *config.Key, t *config.Team) Limits {
	l := Limits{KeyRPM: k.RPM, KeyTPM: k.TPM}
	if t != nil {
		l.TeamRPM, l.TeamTPM = t.RPM, t.TPM
	}
	return l
}

// FormatReset formats a reset time for the x-ratelimit-reset-* headers as
// OpenAI does ("17ms", "1s", "6m0s"): rounded up to the millisecond below a
// second, to the second above.
func FormatReset(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return ((d + time.Millisecond - 1) / time.Millisecond * time.Millisecond).String()
	default:
		return ((d + time.Second - 1) / time.Second * time.Second).String()
	}
}

// RetryAfterSeconds is RetryAfter for the retry-after header: whole seconds,
// rounded up (retry-after-ms carries the precise value).
func RetryAfterSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
