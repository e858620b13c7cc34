package compat

import (
	"cmp"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// apiError checks that err is the SDK's *openai.Error with this status and OpenAI code, carrying the
// gateway's x-request-id.
func apiError(t *testing.T, err error, status int, code string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v, want *openai.Error", err, err)
	}
	if e.StatusCode != status || e.Code != code {
		t.Fatalf("status %d code %q (%s), want %d %q", e.StatusCode, e.Code, e.RawJSON(), status, code)
	}
	if e.Response.Header.Get("x-request-id") == "" {
		t.Error("no x-request-id on the error")
	}
	return e
}

func assertNoUpstreamCall(t *testing.T) {
	t.Helper()
	for name, s := range stats(t) {
		if s.Requests != 0 {
			t.Errorf("%d calls to the %s fake, want 0", s.Requests, name)
		}
	}
}

func TestClientErrors(t *testing.T) {
	model := kindNamed("openai").model
	cases := []struct {
		name, key, model string
		zeroN            bool // send "n": 0
		opts             []option.RequestOption
		status           int
		code, param      string
	}{
		{name: "wrong key is 401", key: "sk-not-a-nanogate-key", status: 401, code: "invalid_api_key"},
		{name: "restricted key on another model is 403", key: env.restrictedKey, status: 403, code: "model_not_allowed"},
		{name: "unknown model is 404", model: "no-such-model", status: 404, code: "model_not_found", param: "model"},
		{name: "n 0 is 400", zeroN: true, status: 400, code: "invalid_request", param: "n"},
		{
			name: "unknown parameter is 400", status: 400, code: "invalid_request", param: "nanogate_no_such_parameter",
			opts: []option.RequestOption{option.WithJSONSet("nanogate_no_such_parameter", true)},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cleanFakes(t)
			params := openai.ChatCompletionNewParams{Model: cmp.Or(tc.model, model), Messages: prompt}
			if tc.zeroN {
				params.N = openai.Int(0) // set explicitly, so the SDK sends it
			}
			c := newClient(cmp.Or(tc.key, env.key))
			_, err := c.Chat.Completions.New(ctx(t), params, tc.opts...)
			e := apiError(t, err, tc.status, tc.code)
			if tc.param != "" && e.Param != tc.param {
				t.Errorf("param %q, want %q", e.Param, tc.param)
			}
			assertNoUpstreamCall(t)
		})
	}
}

// failingCall makes every upstream answer a 200 that is not an answer (an image may have been made and
// billed), runs one call with the SDK's default retries (2), and checks the 502 and that the gateway's attempts
// were the only upstream calls.
func failingCall(t *testing.T, stream bool, model string, want map[string]int64) {
	t.Helper()
	setFault(t, "", map[string]any{"garbage": true})
	c := newClient(env.key)
	params := openai.ChatCompletionNewParams{Model: model, Messages: prompt}
	var err error
	if stream {
		s := c.Chat.Completions.NewStreaming(ctx(t), params)
		for s.Next() {
			t.Fatalf("a chunk from a failed call: %s", s.Current().RawJSON())
		}
		err = s.Err()
		s.Close()
	} else {
		_, err = c.Chat.Completions.New(ctx(t), params)
	}
	e := apiError(t, err, 502, "upstream_error")
	if h := e.Response.Header.Get("x-should-retry"); h != "false" {
		t.Errorf("x-should-retry = %q, want false", h)
	}
	st := stats(t)
	for name, n := range want {
		if st[name].Requests != n {
			t.Errorf("%d calls to the %s fake, want %d", st[name].Requests, name, n)
		}
	}
}

func TestEveryUpstreamFailingIsOneSDKCall(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		// One provider maps this model, so the gateway's attempts end after one call.
		want := map[string]int64{"openai": 0, "gemini": 0, k.server: 1}
		failingCall(t, false, k.model, want)
		want[k.server] = 2
		failingCall(t, true, k.model, want)
	})
}

func TestEveryUpstreamFailingCostsMaxAttempts(t *testing.T) {
	cleanFakes(t)
	want := map[string]int64{"openai": 1, "gemini": 1}
	if env.maxAttempts != 2 {
		t.Fatalf("the config's routing.max_attempts is %d, this case expects 2", env.maxAttempts)
	}
	failingCall(t, false, env.modelBoth, want)
}

// TestOverloadIsRetriedBySDK: one upstream 429 asking for 200 ms reaches the SDK as a retryable answer with
// that delay; the SDK waits and retries on its own, and the second upstream call succeeds.
func TestOverloadIsRetriedBySDK(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		setFault(t, k.server, map[string]any{"status": 429, "header": map[string]string{"retry-after-ms": "200"}, "times": 1})
		c := newClient(env.key)
		res, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt})
		if err != nil {
			t.Fatalf("the SDK did not retry the overload through: %v", err)
		}
		if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
			t.Fatalf("empty answer after the retry")
		}
		if n := stats(t)[k.server].Requests; n != 2 {
			t.Fatalf("%d upstream calls, want one failed and one successful", n)
		}
	})
}

func TestSDKTimeoutCancelsUpstreamCall(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		setLatency(t, k.server, "10s")
		c := newClient(env.key, option.WithRequestTimeout(time.Second), option.WithMaxRetries(0))
		start := time.Now()
		_, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want the request timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the call took %v", d)
		}
		// The fake answers after 10 s: a cancellation it counts before then can only come from the gateway.
		waitFor(t, "the fake to see its caller leave", 5*time.Second, func() bool {
			s := stats(t)[k.server]
			return s.Canceled == 1 && s.Inflight == 0
		})
		if n := stats(t)[k.server].Requests; n != 1 {
			t.Errorf("%d upstream calls, want 1", n)
		}
	})
}
