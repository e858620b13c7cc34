package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nanogate/internal/redistest"
)

func TestRateLimitHeadersAnd429(t *testing.T) {
	e := startEnv(t, opts{keyLimits: "    rpm: 3\n    tpm: 100000\n"})
	for i := 0; i < 3; i++ {
		resp := e.post(t, chatBody(""))
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		if got := resp.Header.Get("x-ratelimit-limit-requests"); got != "3" {
			t.Fatalf("x-ratelimit-limit-requests = %q", got)
		}
		if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != strconv.Itoa(2-i) {
			t.Fatalf("request %d: remaining = %q", i, got)
		}
		for _, h := range []string{"x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} {
			if resp.Header.Get(h) == "" {
				t.Fatalf("missing %s", h)
			}
		}
	}
	before := e.cheap.Requests()
	resp := e.post(t, chatBody(""))
	ra, ram := resp.Header.Get("retry-after"), resp.Header.Get("retry-after-ms")
	env := expectError(t, resp, 429, "rate_limit_exceeded")
	if !strings.Contains(env.Error.Message, "key ci") || !strings.Contains(env.Error.Message, "RPM") {
		t.Errorf("message does not name the limit: %q", env.Error.Message)
	}
	// 3 RPM refills one request every 20 s.
	if n, err := strconv.Atoi(ra); err != nil || n < 1 || n > 20 {
		t.Errorf("retry-after = %q", ra)
	}
	if n, err := strconv.Atoi(ram); err != nil || n < 1 || n > 20000 {
		t.Errorf("retry-after-ms = %q", ram)
	}
	if e.cheap.Requests() != before {
		t.Fatal("a refused request reached the upstream")
	}
}

// TestRateLimitHeadersOnEveryAnswer: answers that do not go through
// admission (the model list, usage, a request refused before it was
// admitted) carry the key's limits as they stand, in memory and on Redis,
// and reading them charges nothing.
func TestRateLimitHeadersOnEveryAnswer(t *testing.T) {
	for _, withRedis := range []bool{false, true} {
		t.Run(map[bool]string{false: "InMemory", true: "Redis"}[withRedis], func(t *testing.T) {
			o := opts{keyLimits: "    rpm: 3\n    tpm: 100000\n"}
			if withRedis {
				o.extra = fmt.Sprintf("redis:\n  addrs: [%q]\n", redistest.Start(t).Addr)
			}
			e := startEnv(t, o)
			check := func(what string, resp *http.Response, remaining string) {
				t.Helper()
				readAll(t, resp)
				if got := resp.Header.Get("x-ratelimit-limit-requests"); got != "3" {
					t.Errorf("%s (%d): x-ratelimit-limit-requests %q, want 3", what, resp.StatusCode, got)
				}
				if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != remaining {
					t.Errorf("%s (%d): x-ratelimit-remaining-requests %q, want %s", what, resp.StatusCode, got, remaining)
				}
				if resp.Header.Get("x-ratelimit-limit-tokens") != "100000" || resp.Header.Get("x-ratelimit-reset-requests") == "" {
					t.Errorf("%s: token and reset headers %v", what, resp.Header)
				}
			}
			get := func(path string) *http.Response {
				req, _ := http.NewRequest("GET", e.gw.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+clientKey)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			for range 4 {
				check("GET /v1/models", get("/v1/models"), "3")
			}
			check("GET /v1/usage", get("/v1/usage"), "3")
			check("a malformed request", e.post(t, `{"model":`), "3")
			check("the first request", e.post(t, chatBody("")), "2")
			check("GET /v1/models after it", get("/v1/models"), "2")
		})
	}
}

func TestTPMCountsImageTokensAndReconciles(t *testing.T) {
	// Each request is charged its estimate up front: 1290 for the image +
	// 256 of text allowance + ~4 prompt tokens = 1550. The fake then reports
	// 540 prompt + 8 text + 1290 image = 1838, and the bucket is corrected by
	// the 288 of debt. Against a TPM of 5000: without the correction three
	// would pass (3 x 1550); with it the third finds 2 x 1838 + 1550 > 5000.
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			o := opts{keyLimits: "    tpm: 5000\n"}
			if backend == "redis" {
				o.extra = fmt.Sprintf("redis:\n  addrs: [%q]\n", redistest.Start(t).Addr)
			}
			e := startEnv(t, o)
			codes := ""
			for i := 0; i < 4; i++ {
				resp := e.post(t, chatBody(""))
				readAll(t, resp)
				codes += strconv.Itoa(resp.StatusCode) + " "
				if resp.StatusCode != 200 {
					continue
				}
				// The correction lands off the response path. Only it takes
				// tokens from the bucket after the charge, which refills.
				charged := tokensHeader(t, resp)
				waitFor(t, 10*time.Second, "the correction", func() bool { return e.tokensLeft(t) < charged })
			}
			if codes != "200 200 429 429 " {
				t.Fatalf("statuses %s", codes)
			}
		})
	}
}

// tokensHeader is an answer's x-ratelimit-remaining-tokens.
func tokensHeader(t *testing.T, resp *http.Response) int64 {
	t.Helper()
	n, err := strconv.ParseInt(resp.Header.Get("x-ratelimit-remaining-tokens"), 10, 64)
	if err != nil {
		t.Fatalf("x-ratelimit-remaining-tokens %q", resp.Header.Get("x-ratelimit-remaining-tokens"))
	}
	return n
}

// tokensLeft asks how many tokens the client key's bucket holds, with a
// request that can never fit its TPM limit, refused without a charge.
func (e *env) tokensLeft(t *testing.T) int64 {
	t.Helper()
	resp := e.post(t, chatBody(`,"max_tokens":8000`))
	readAll(t, resp)
	if resp.StatusCode != 429 || resp.Header.Get("x-should-retry") != "false" {
		t.Fatalf("a request above the TPM limit: %d, x-should-retry %q", resp.StatusCode, resp.Header.Get("x-should-retry"))
	}
	return tokensHeader(t, resp)
}

func TestImpossibleRequestIsRefusedForGood(t *testing.T) {
	e := startEnv(t, opts{keyLimits: "    tpm: 1000\n"})
	resp := e.post(t, chatBody(""))
	if resp.Header.Get("x-should-retry") != "false" {
		t.Errorf("a request that can never fit is not marked x-should-retry: false")
	}
	expectError(t, resp, 429, "rate_limit_exceeded")
}

// TestTwoReplicasShareOneRedis: two gateway processes on one Redis admit
// exactly L of a 3L burst against a full bucket of capacity L.
func TestTwoReplicasShareOneRedis(t *testing.T) {
	rs := redistest.Start(t)
	// Generous deadlines: a shared test machine may be slow, and this test is
	// about exactness, not the outage policy.
	extra := fmt.Sprintf("redis:\n  addrs: [%q]\n  on_outage: closed\n  decision_timeout: 3s\n  read_timeout: 3s\n  write_timeout: 3s\n  dial_timeout: 3s\n", rs.Addr)
	const L = 12
	a := startEnv(t, opts{extra: extra, keyLimits: fmt.Sprintf("    rpm: %d\n", L)})
	b := startEnv(t, opts{extra: extra, keyLimits: fmt.Sprintf("    rpm: %d\n", L)})
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 3*L; i++ {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := e.post(t, chatBody(""))
			readAll(t, resp)
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 429:
				refused.Add(1)
			default:
				other.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != L || refused.Load() != 2*L {
		t.Fatalf("admitted %d, refused %d, other statuses %d; want exactly %d and %d", ok.Load(), refused.Load(), other.Load(), L, 2*L)
	}
}

// TestRedisOutage: with on_outage open, requests keep succeeding quickly
// while Redis is down and limits apply again when it is back; with closed,
// they get 503 limiter_unavailable.
func TestRedisOutage(t *testing.T) {
	for _, policy := range []string{"open", "closed"} {
		t.Run(policy, func(t *testing.T) {
			rs := redistest.Start(t)
			e := startEnv(t, opts{extra: fmt.Sprintf("redis:\n  addrs: [%q]\n  on_outage: %s\n", rs.Addr, policy),
				keyLimits: "    rpm: 1000\n"})
			readAll(t, e.post(t, chatBody("")))
			rs.Kill()
			for i := 0; i < 5; i++ {
				start := time.Now()
				resp := e.post(t, chatBody(""))
				readAll(t, resp)
				if d := time.Since(start); d > time.Second {
					t.Fatalf("request %d took %v with Redis down", i, d)
				}
				want := 200
				if policy == "closed" {
					want = 503
				}
				if resp.StatusCode != want {
					t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, want)
				}
			}
			var code int
			if policy == "closed" {
				code = getJSON(t, e.gw.URL+"/readyz", "", nil)
				if code != 503 {
					t.Errorf("readyz with Redis down and on_outage closed: %d", code)
				}
			}
			rs.Restart()
			waitFor(t, 10*time.Second, "Redis to be used again", func() bool {
				resp := e.post(t, chatBody(""))
				readAll(t, resp)
				return resp.StatusCode == 200 && resp.Header.Get("x-ratelimit-limit-requests") == "1000"
			})
			if policy == "open" {
				waitLog(t, e.gw, "redis")
			}
		})
	}
}
