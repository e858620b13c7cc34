package ratelimit

import (
	"strconv"
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

// AppendReset appends a reset time for the x-ratelimit-reset-* headers as
// OpenAI writes it ("17ms", "1s", "6m0s", as time.Duration prints it):
// rounded up to the millisecond below a second, to the second above. It
// allocates nothing, for a header set on every response.
func AppendReset(dst []byte, d time.Duration) []byte {
	switch {
	case d <= 0:
		return append(dst, "0s"...)
	case d <= time.Second-time.Millisecond:
		ms := d / time.Millisecond
		if d%time.Millisecond != 0 {
			ms++
		}
		return append(strconv.AppendInt(dst, int64(ms), 10), "ms"...)
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++ // no overflow: d / time.Second is far below the int64 range
	}
	if h := s / 3600; h > 0 {
		dst = append(strconv.AppendInt(dst, h, 10), 'h')
	}
	if s >= 60 {
		dst = append(strconv.AppendInt(dst, s/60%60, 10), 'm')
	}
	return append(strconv.AppendInt(dst, s%60, 10), 's')
}

// RetryAfterSeconds is RetryAfter for the retry-after header: whole seconds,
// rounded up (retry-after-ms carries the precise value).
func RetryAfterSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
