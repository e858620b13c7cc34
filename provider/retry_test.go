package provider

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestUpstreamRetryDelaysAreBounded: a retry delay from an upstream header or
// Google's RetryInfo never overflows a Duration nor goes negative; absurd
// ones are clamped to MaxRetryAfter, meaningless ones ignored.
func TestUpstreamRetryDelaysAreBounded(t *testing.T) {
	headers := []struct {
		name, value string
		want        time.Duration
	}{
		{"retry-after", "13", 13 * time.Second},
		{"retry-after", "1.5", 1500 * time.Millisecond},
		{"retry-after", "999999999", MaxRetryAfter},
		{"retry-after", "1e300", MaxRetryAfter},
		{"retry-after", "9223372036854775807", MaxRetryAfter},
		{"retry-after", "Inf", MaxRetryAfter},
		{"retry-after", "-5", 0},
		{"retry-after", "NaN", 0},
		{"retry-after", "0", 0},
		{"retry-after", "soon", 0},
		{"retry-after-ms", "250", 250 * time.Millisecond},
		{"retry-after-ms", "1e18", MaxRetryAfter},
		{"retry-after-ms", "-1", 0},
	}
	for _, h := range headers {
		var r fasthttp.Response
		r.Header.Set(h.name, h.value)
		if got := retryAfter(&r); got != h.want {
			t.Errorf("%s: %s = %v, want %v", h.name, h.value, got, h.want)
		}
	}
	protos := map[string]time.Duration{
		"1e9s":                  MaxRetryAfter,
		"999999999999999999.9s": MaxRetryAfter,
		"86399s":                86399 * time.Second,
	}
	for in, want := range protos {
		if got, ok := parseProtoDuration(in); !ok || got != want {
			t.Errorf("%q = %v %v, want %v", in, got, ok, want)
		}
	}
}
