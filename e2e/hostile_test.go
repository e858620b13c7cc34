package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"nanogate/internal/redistest"
)

// backends runs fn against the embedded limiter and accounting, then with
// Redis.
func backends(t *testing.T, fn func(t *testing.T, extra string)) {
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			extra := ""
			if backend == "redis" {
				extra = fmt.Sprintf("redis:\n  addrs: [%q]\n", redistest.Start(t).Addr)
			}
			fn(t, extra)
		})
	}
}

// TestHostileMaxTokensCannotLockTheTeamOut is the reproduction of one
// request with n: 2 and max_tokens 3·2^61-1290, whose estimate wrapped and
// left the team's TPM bucket at about -2^52 for 142 years: it is refused
// with the parameter named, and the team is served right after.
func TestHostileMaxTokensCannotLockTheTeamOut(t *testing.T) {
	backends(t, func(t *testing.T, extra string) {
		e := startEnv(t, opts{extra: extra, teamLimits: "    tpm: 100000\n    rpm: 1000\n"})
		for _, extraParams := range []string{
			`,"n":2,"max_tokens":` + strconv.FormatInt(3*(1<<61)-1290, 10),
			`,"max_tokens":432345564227567616`,
			`,"max_completion_tokens":1e30`,
			`,"max_tokens":32769`,
		} {
			env := expectError(t, e.post(t, chatBody(extraParams)), 400, "invalid_request")
			if env.Error.Param == nil || !strings.HasPrefix(*env.Error.Param, "max_") {
				t.Errorf("%s: param %v", extraParams, env.Error.Param)
			}
		}
		resp := e.post(t, chatBody(`,"max_tokens":32768`))
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("a request at the output limit: %d", resp.StatusCode)
		}
		rem, _ := strconv.ParseInt(resp.Header.Get("x-ratelimit-remaining-tokens"), 10, 64)
		if rem <= 0 || rem > 100000 {
			t.Fatalf("x-ratelimit-remaining-tokens = %q after the hostile requests", resp.Header.Get("x-ratelimit-remaining-tokens"))
		}
	})
}

// TestHostileUpstreamUsageIsClamped: an upstream reporting 1e12 prompt
// tokens used to bill the team $300,000 and lock its TPM; one reporting -5
// panicked a Prometheus counter (a 500 for an image that was made, and a
// lost record). Both are clamped, billed at the bound, counted in a metric
// and logged once.
func TestHostileUpstreamUsageIsClamped(t *testing.T) {
	backends(t, func(t *testing.T, extra string) {
		e := startEnv(t, opts{extra: extra, teamLimits: "    tpm: 20000\n    rpm: 1000\n"})
		for i, reported := range []int{1e12, -5, 1e12} {
			e.cheap.SetPromptTokens(reported)
			var c completion
			resp := e.post(t, chatBody(""))
			if resp.StatusCode != 200 {
				t.Fatalf("request %d (prompt_tokens %d): status %d: %s", i, reported, resp.StatusCode, readAll(t, resp))
			}
			if err := json.Unmarshal(readAll(t, resp), &c); err != nil {
				t.Fatal(err)
			}
			if p := c.Usage.PromptTokens; p < 0 || p > 5000 {
				t.Fatalf("request %d: prompt_tokens %d reached the client", i, p)
			}
		}
		e.cheap.SetPromptTokens(540)
		resp := e.post(t, chatBody(""))
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("the team is locked out after the hostile reports: %d", resp.StatusCode)
		}
		var u usageView
		waitFor(t, 10*time.Second, "the four records", func() bool { u = e.usage(t); return u.Team.Requests == 4 })
		if u.Team.CostUSD <= 0 || u.Team.CostUSD > 0.2 || u.Team.PromptTokens > 3*5000+540 {
			t.Fatalf("team billed $%v for %d prompt tokens", u.Team.CostUSD, u.Team.PromptTokens)
		}
		_, metrics := do(t, "GET", e.gw.URL+"/metrics", "", "", nil)
		if !strings.Contains(string(metrics), `nanogate_upstream_usage_clamped_total{field="prompt",provider="cheap"} 3`) {
			t.Errorf("no clamp count in /metrics")
		}
		waitRequestLine(t, e.gw, resp)
		if n := strings.Count(e.gw.Logs(), "usage out of bounds"); n != 1 {
			t.Errorf("the clamp was logged %d times, want once per provider", n)
		}
	})
}

// TestConcurrentRequestsCannotOverspendABudget is the reproduction of 20
// concurrent requests whose estimate wrapped to $0 against a $0.10 budget:
// the largest max_tokens the parser admits is estimated in full, and a
// budget admits what it holds.
func TestConcurrentRequestsCannotOverspendABudget(t *testing.T) {
	backends(t, func(t *testing.T, extra string) {
		e := startEnv(t, opts{extra: extra, budget: "{ usd: 0.10, period: monthly }"})
		e.cheap.SetLatency(200 * time.Millisecond)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Reserved at $0.039 + 32768 × $2.50/M = $0.121: never fits.
				resp := e.post(t, chatBody(`,"max_tokens":32768`))
				readAll(t, resp)
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if codes[429] != 20 {
			t.Fatalf("statuses %v: a request estimated above the budget was admitted", codes)
		}
		codes = map[int]int{}
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp := e.post(t, chatBody(`,"max_tokens":1000`)) // $0.0415 reserved
				readAll(t, resp)
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if codes[200] < 1 || codes[200] > 2 || codes[200]+codes[429] != 20 {
			t.Fatalf("statuses %v, want at most two admitted", codes)
		}
		var u usageView
		waitFor(t, 10*time.Second, "the records", func() bool { u = e.usage(t); return u.Team.Requests == int64(codes[200]) })
		if u.Team.CostUSD > 0.10 {
			t.Fatalf("spent $%v of a $0.10 budget", u.Team.CostUSD)
		}
	})
}

// TestUnknownModelsAreRateLimitedAndNotEchoedWhole: requests for models no
// provider serves count against the key's RPM like any other, and a model
// id of megabytes is refused without reaching the log.
func TestUnknownModelsAreRateLimitedAndNotEchoedWhole(t *testing.T) {
	backends(t, func(t *testing.T, extra string) {
		e := startEnv(t, opts{extra: extra, keyLimits: "    rpm: 3\n", maxBody: 2 << 20})
		codes := ""
		for range 4 {
			resp := e.post(t, `{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}`)
			readAll(t, resp)
			codes += strconv.Itoa(resp.StatusCode) + " "
		}
		if codes != "404 404 404 429 " {
			t.Fatalf("statuses %s", codes)
		}
		// The four requests' lines are out before the log is measured.
		waitRequestLines(t, e.gw, 4)
		before := len(e.gw.Logs())
		huge := strings.Repeat("m", 1<<20)
		resp := e.post(t, `{"model":"`+huge+`","messages":[{"role":"user","content":"hi"}]}`)
		expectError(t, resp, 400, "invalid_request")
		waitRequestLine(t, e.gw, resp)
		if grown := len(e.gw.Logs()) - before; grown > 4096 {
			t.Fatalf("one request with a 1 MiB model id added %d bytes to the log", grown)
		}
	})
}
