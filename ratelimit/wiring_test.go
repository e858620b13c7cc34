package ratelimit

import (
	"math"
	"testing"
	"time"

	"nanogate/config"
)

func TestAppendReset(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", math.MinInt64: "0s", 1: "1ms", 16*time.Millisecond + 1: "17ms",
		999 * time.Millisecond: "999ms", 999*time.Millisecond + 1: "1s", time.Second: "1s",
		1500 * time.Millisecond: "2s", 6 * time.Minute: "6m0s", 359*time.Second + 1: "6m0s",
		time.Hour: "1h0m0s", 90061 * time.Second: "25h1m1s", math.MaxInt64: "2562047h47m17s",
	} {
		if got := string(AppendReset([]byte("x:"), d)); got != "x:"+want {
			t.Errorf("AppendReset(%v) = %q, want %q", d, got, "x:"+want)
		}
	}
	// As time.Duration prints a whole number of seconds or milliseconds.
	for _, d := range []time.Duration{59 * time.Second, 61 * time.Second, 3599 * time.Second, 3601 * time.Second,
		1000 * time.Hour, 7 * time.Millisecond} {
		if got := string(AppendReset(nil, d)); got != d.String() {
			t.Errorf("AppendReset(%v) = %q", d, got)
		}
	}
	if got := RetryAfterSeconds(1920 * time.Millisecond); got != 2 {
		t.Errorf("RetryAfterSeconds(1.92s) = %d, want 2", got)
	}
}

func TestLimitsOfAndNew(t *testing.T) {
	key := &config.Key{Name: "design-ci", Team: "design", RPM: 60, TPM: 200000}
	team := &config.Team{Name: "design", RPM: 600, TPM: 2000000}
	if got, want := LimitsOf(key, team), (Limits{60, 200000, 600, 2000000}); got != want {
		t.Errorf("LimitsOf = %+v, want %+v", got, want)
	}
	if got, want := LimitsOf(key, nil), (Limits{KeyRPM: 60, KeyTPM: 200000}); got != want {
		t.Errorf("LimitsOf without team = %+v, want %+v", got, want)
	}
	if _, ok := New(&config.Config{}, nil).(*Memory); !ok {
		t.Error("New without redis: not a Memory")
	}
	l := New(&config.Config{Redis: &config.Redis{Addrs: []string{"127.0.0.1:1"}}}, nil)
	defer l.Close()
	if _, ok := l.(*Redis); !ok {
		t.Error("New with redis: not a Redis")
	}
}
