package compat

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func upstreamCalls(t *testing.T) int64 {
	var n int64
	for _, s := range stats(t) {
		n += s.Requests
	}
	return n
}

// assertRateLimited checks a refusal as the SDK reports it: *openai.Error 429 rate_limit_exceeded, and the
// headers retry-after (seconds, rounded up) and retry-after-ms on the raw response. It returns retry-after-ms.
func assertRateLimited(t *testing.T, err error, maxMs int) int {
	t.Helper()
	e := apiError(t, err, 429, "rate_limit_exceeded")
	if !strings.Contains(e.Message, "RPM") {
		t.Errorf("the message does not name the limit: %q", e.Message)
	}
	ra, ram := e.Response.Header.Get("retry-after"), e.Response.Header.Get("retry-after-ms")
	s, err1 := strconv.Atoi(ra)
	ms, err2 := strconv.Atoi(ram)
	if err1 != nil || err2 != nil || ms < 1 || ms > maxMs {
		t.Fatalf("retry-after %q, retry-after-ms %q, want 1..%d ms", ra, ram, maxMs)
	}
	if want := int(math.Ceil(float64(ms) / 1000)); s != want {
		t.Errorf("retry-after %d is not retry-after-ms %d in seconds, rounded up", s, ms)
	}
	return ms
}

func TestRateLimitErrorWithRetriesOff(t *testing.T) {
	cleanFakes(t)
	// The key allows 1 request per minute.
	model := kinds[0].model
	c := newClient(env.limitedKey, option.WithMaxRetries(0))
	var res *http.Response
	if _, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{Model: model, Prompt: imagePrompt}, option.WithResponseInto(&res)); err != nil {
		t.Fatal(err)
	}
	if l, r := res.Header.Get("x-ratelimit-limit-requests"), res.Header.Get("x-ratelimit-remaining-requests"); l != "1" || r != "0" {
		t.Errorf("x-ratelimit-limit-requests %q, x-ratelimit-remaining-requests %q, want 1 and 0", l, r)
	}
	before := upstreamCalls(t)

	_, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{Model: model, Prompt: imagePrompt})
	assertRateLimited(t, err, 60_000)
	_, err = c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: model, Messages: prompt})
	assertRateLimited(t, err, 60_000)
	if n := upstreamCalls(t); n != before {
		t.Errorf("%d refused calls reached an upstream", n-before)
	}
}

// drain spends the refill key's bucket with retries off until a refusal that asks to wait at least 1 s, and
// returns that wait.
func drain(t *testing.T, model string) int {
	t.Helper()
	c := newClient(env.refillKey, option.WithMaxRetries(0))
	for range 2 * env.refillRPM {
		_, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{Model: model, Prompt: imagePrompt})
		if err == nil {
			continue
		}
		ms := assertRateLimited(t, err, int(math.Ceil(60_000/float64(env.refillRPM))))
		if ms >= 1000 {
			return ms
		}
		time.Sleep(time.Duration(ms) * time.Millisecond) // nearly refilled: take that request too
	}
	t.Fatalf("the refill key's bucket (%d RPM) never ran out", env.refillRPM)
	return 0
}

type attempt struct {
	sent, received time.Time
	status         int
	retryAfterMs   int
}

func TestSDKRetryWaitsOutRetryAfter(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		drain(t, k.model)
		reset(t) // zero the fakes' counters: only the call below counts

		// The SDK with its defaults (2 retries); a middleware that only records each attempt.
		var wire []attempt
		record := option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			a := attempt{sent: time.Now()}
			res, err := next(req)
			a.received = time.Now()
			if res != nil {
				a.status = res.StatusCode
				a.retryAfterMs, _ = strconv.Atoi(res.Header.Get("retry-after-ms"))
			}
			wire = append(wire, a)
			return res, err
		})
		c := newClient(env.refillKey, record)
		var res *http.Response
		start := time.Now()
		r, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{Model: k.model, Prompt: imagePrompt}, option.WithResponseInto(&res))
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%v after %d attempts", err, len(wire))
		}
		var statuses []int
		for _, a := range wire {
			statuses = append(statuses, a.status)
		}
		if fmt.Sprint(statuses) != "[429 200]" {
			t.Fatalf("statuses %v, want one refusal, then the SDK's retry admitted", statuses)
		}
		waited := wire[1].sent.Sub(wire[0].received)
		if want := time.Duration(wire[0].retryAfterMs)*time.Millisecond - 5*time.Millisecond; waited < want {
			t.Errorf("the SDK waited %v, retry-after-ms was %d", waited, wire[0].retryAfterMs)
		}
		if took > 10*time.Second {
			t.Errorf("the call took %v", took)
		}
		if p := res.Header.Get("x-nanogate-provider"); p != k.provider {
			t.Errorf("x-nanogate-provider %q, want %q", p, k.provider)
		}
		if len(r.Data) != 1 {
			t.Fatalf("%d images", len(r.Data))
		}
		b64Image(t, r.Data[0])
		assertUpstreamCalls(t, k, 1)
	})
}

var resetFormat = regexp.MustCompile(`^([0-9]+h)?([0-9]+m)?[0-9]+(\.[0-9]+)?(ms|s)$`) // 20ms, 1s, 6m0s

// assertLimitHeaders checks OpenAI's x-ratelimit-* headers of an admitted answer for the metered key; the
// request's estimate included images x 1290 tokens.
func assertLimitHeaders(t *testing.T, h http.Header, images int) {
	t.Helper()
	if got := h.Get("x-ratelimit-limit-requests"); got != strconv.Itoa(env.meteredRPM) {
		t.Errorf("x-ratelimit-limit-requests %q, want %d", got, env.meteredRPM)
	}
	if n, err := strconv.Atoi(h.Get("x-ratelimit-remaining-requests")); err != nil || n < 0 || n >= env.meteredRPM {
		t.Errorf("x-ratelimit-remaining-requests %q", h.Get("x-ratelimit-remaining-requests"))
	}
	if got := h.Get("x-ratelimit-limit-tokens"); got != strconv.Itoa(env.meteredTPM) {
		t.Errorf("x-ratelimit-limit-tokens %q, want %d", got, env.meteredTPM)
	}
	if n, err := strconv.Atoi(h.Get("x-ratelimit-remaining-tokens")); err != nil || n < 0 || n > env.meteredTPM-1290*images {
		t.Errorf("x-ratelimit-remaining-tokens %q, want at most %d", h.Get("x-ratelimit-remaining-tokens"), env.meteredTPM-1290*images)
	}
	for _, name := range []string{"x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"} {
		if !resetFormat.MatchString(h.Get(name)) {
			t.Errorf("%s %q", name, h.Get(name))
		}
	}
}

func TestRateLimitHeadersWithResponseInto(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		c := newClient(env.meteredKey)
		var res *http.Response
		if _, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt},
			option.WithResponseInto(&res)); err != nil {
			t.Fatal(err)
		}
		assertLimitHeaders(t, res.Header, 1)
		r, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{Model: k.model, Prompt: imagePrompt, N: openai.Int(2)},
			option.WithResponseInto(&res))
		if err != nil {
			t.Fatal(err)
		}
		assertLimitHeaders(t, res.Header, 2)
		if len(r.Data) != 2 {
			t.Errorf("%d images, want 2", len(r.Data))
		}
	})
}
