package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
)

func TestFailoverToNextProvider(t *testing.T) {
	tests := []struct {
		name  string
		fault fakeup.Fault
	}{
		{"5xx", fakeup.Fault{Status: 500}},
		{"429", fakeup.Fault{Status: 429}},
		{"garbage 200", fakeup.Fault{Garbage: true}},
		{"dropped mid body", fakeup.Fault{DropMidBody: true}},
		{"bad upstream key", fakeup.Fault{Status: 401}},
	}
	e := startEnv(t, opts{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.cheap.Reset()
			e.dear.Reset()
			f := tt.fault
			f.Times = 1
			e.cheap.SetFault(f)
			resp := e.post(t, chatBody(""))
			body := readAll(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if p := resp.Header.Get("x-nanogate-provider"); p != "dear" {
				t.Fatalf("served by %q, want dear", p)
			}
			if e.cheap.Requests() != 1 || e.dear.Requests() != 1 {
				t.Fatalf("requests cheap=%d dear=%d", e.cheap.Requests(), e.dear.Requests())
			}
		})
	}
	lines := waitRequestLines(t, e.gw, len(tests))
	last := lines[len(lines)-1]
	if last["provider"] != "dear" || last["attempts"] != float64(2) {
		t.Errorf("log line = %v, want provider dear after 2 attempts", last)
	}
}

func TestStreamFailsOverBeforeFirstByte(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetFault(fakeup.Fault{Status: 503, Times: 1})
	resp := e.post(t, chatBody(`,"stream":true`))
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "dear" {
		t.Fatalf("status %d provider %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
	events := sseEvents(t, resp)
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream from the second provider is incomplete: %d events", len(events))
	}
}

func TestUpstreamClientErrorIsNotRetried(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetFault(fakeup.Fault{Status: 400})
	resp := e.post(t, chatBody(""))
	if got := resp.Header.Get("x-nanogate-provider"); got != "cheap" {
		t.Errorf("x-nanogate-provider %q, want the provider that refused (cheap)", got)
	}
	if got := resp.Header.Get("x-should-retry"); got != "false" {
		t.Errorf("x-should-retry %q, want false", got)
	}
	expectError(t, resp, 400, "invalid_request")
	if e.dear.Requests() != 0 {
		t.Fatalf("a 400 was retried on another provider")
	}
}

// TestAllProvidersFail: when every attempt may have made an image (a 200
// that is not an answer, a body cut short), a retry could buy another: 502
// with x-should-retry: false, naming the providers tried.
func TestAllProvidersFail(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetFault(fakeup.Fault{Garbage: true})
	e.dear.SetFault(fakeup.Fault{DropMidBody: true})
	resp := e.post(t, chatBody(""))
	if resp.Header.Get("x-should-retry") != "false" {
		t.Errorf("x-should-retry = %q, want false", resp.Header.Get("x-should-retry"))
	}
	if got := resp.Header.Get("x-nanogate-provider"); got != "dear" {
		t.Errorf("x-nanogate-provider %q, want the last provider tried (dear)", got)
	}
	env := expectError(t, resp, 502, "upstream_error")
	if !strings.Contains(env.Error.Message, "cheap") || !strings.Contains(env.Error.Message, "dear") {
		t.Errorf("message does not name the providers tried: %q", env.Error.Message)
	}
	for _, secret := range []string{upstreamK1, upstreamK2, "127.0.0.1"} {
		if strings.Contains(env.Error.Message, secret) {
			t.Errorf("error message leaks %q: %s", secret, env.Error.Message)
		}
	}
}

// TestOverloadedUpstreamsAreRetryable: when no attempt could have made an
// image (5xx answers, 429s), the answer is a 429 the SDKs retry by
// themselves: retry-after and retry-after-ms from the smallest upstream
// delay, and no x-should-retry: false.
func TestOverloadedUpstreamsAreRetryable(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetFault(fakeup.Fault{Status: 500})
	e.dear.SetFault(fakeup.Fault{Status: 429, Header: map[string]string{"retry-after": "7"}})
	resp := e.post(t, chatBody(""))
	if v := resp.Header.Get("x-should-retry"); v != "" {
		t.Errorf("x-should-retry = %q on an overload", v)
	}
	if resp.Header.Get("retry-after") != "7" || resp.Header.Get("retry-after-ms") != "7000" {
		t.Errorf("retry-after %q, retry-after-ms %q, want 7 and 7000", resp.Header.Get("retry-after"), resp.Header.Get("retry-after-ms"))
	}
	rid := resp.Header.Get("x-request-id")
	env := expectError(t, resp, 429, "rate_limit_exceeded")
	if !strings.Contains(env.Error.Message, "cheap") || !strings.Contains(env.Error.Message, "dear") {
		t.Errorf("message does not name the providers tried: %q", env.Error.Message)
	}
	// Each failed attempt is logged with its reason and the request's id
	// (the log reaches the test through a pipe: it may trail the answer).
	for _, p := range []string{"cheap", "dear"} {
		want := `"msg":"upstream attempt failed","request_id":"` + rid + `","provider":"` + p + `"`
		waitFor(t, 5*time.Second, "the log line "+want, func() bool { return strings.Contains(e.gw.Logs(), want) })
	}
	// dear is benched for its 7 s, cheap still usable: 429 again, and a
	// second later, once cheap recovers, a success.
	e.cheap.ClearFault()
	resp = e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "cheap" {
		t.Fatalf("after the overload: %d from %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
}

// TestEveryProviderOutIs503WithRetryAfter: once every provider's circuit is
// open, requests get 503 no_provider_available with retry-after at the
// earliest re-open, retryable.
func TestEveryProviderOutIs503WithRetryAfter(t *testing.T) {
	e := startEnv(t, opts{threshold: 1, cooldown: "20s"})
	e.cheap.SetFault(fakeup.Fault{Status: 503})
	e.dear.SetFault(fakeup.Fault{Status: 503})
	readAll(t, e.post(t, chatBody(""))) // opens both circuits
	resp := e.post(t, chatBody(""))
	if v := resp.Header.Get("x-should-retry"); v != "" {
		t.Errorf("x-should-retry = %q", v)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("retry-after"))
	if ra < 1 || ra > 20 {
		t.Errorf("retry-after = %q, want the circuits' re-open within 20 s", resp.Header.Get("retry-after"))
	}
	expectError(t, resp, 503, "no_provider_available")
	if n := e.cheap.Requests() + e.dear.Requests(); n != 2 {
		t.Errorf("%d upstream requests: open circuits were called", n)
	}
}

func TestMaxAttemptsBoundsFailover(t *testing.T) {
	e := startEnv(t, opts{maxAttempts: 1})
	e.cheap.SetFault(fakeup.Fault{Garbage: true})
	expectError(t, e.post(t, chatBody("")), 502, "upstream_error")
	if e.dear.Requests() != 0 {
		t.Fatalf("max_attempts 1 still tried a second provider")
	}
}

func TestHangingUpstreamTimesOut(t *testing.T) {
	e := startEnv(t, opts{timeout: "500ms"})
	e.cheap.SetFault(fakeup.Fault{Hang: true})
	e.dear.SetFault(fakeup.Fault{Hang: true})
	start := time.Now()
	resp := e.post(t, chatBody(""))
	expectError(t, resp, 504, "upstream_timeout")
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	waitFor(t, 10*time.Second, "both hung calls to be abandoned", func() bool {
		return e.cheap.Canceled() == 1 && e.dear.Canceled() == 1
	})
}

func TestHangThenFailoverSucceeds(t *testing.T) {
	e := startEnv(t, opts{timeout: "500ms"})
	e.cheap.SetFault(fakeup.Fault{Hang: true})
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "dear" {
		t.Fatalf("status %d provider %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
}
