package ratelimit

import (
	"testing"
	"time"

	"nanogate/config"
)

func TestFormatReset(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", 16*time.Millisecond + 1: "17ms", time.Second: "1s",
		1500 * time.Millisecond: "2s", 6 * time.Minute: "6m0s", 359*time.Second + 1: "6m0s",
	} {
		if got := FormatReset(d); got != want {
			t.Errorf("FormatReset(%v) = %q, want %q", d, got, want)
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
