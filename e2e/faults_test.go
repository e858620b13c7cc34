package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// TestRedisKilledUnderLoad: a load at c=16 runs while Redis is killed and
// restarted. No request hangs (each is bounded by the limiter's deadline and
// the gateway's own work), every request is answered, and the usage totals
// equal the 200s served exactly: records made during the outage are spooled
// and replayed once.
func TestRedisKilledUnderLoad(t *testing.T) {
	// appendfsync always: under everysec, Redis may postpone writing its
	// log while an fsync runs and still reply, so a SIGKILL can lose a write
	// it acknowledged. This test is about the gateway's spool, not about
	// that window.
	rs := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	e := startEnv(t, opts{extra: fmt.Sprintf("redis:\n  addrs: [%q]\n  on_outage: open\n", rs.Addr),
		keyLimits: "    rpm: 1000000\n    tpm: 1000000000\n"})
	e.cheap.SetLatency(5 * time.Millisecond)
	var ok, other atomic.Int64
	var slowest atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				req, _ := http.NewRequest("POST", e.gw.URL+"/v1/chat/completions", strings.NewReader(chatBody("")))
				req.Header.Set("Authorization", "Bearer "+clientKey)
				resp, err := client.Do(req)
				if err != nil {
					other.Add(1)
					continue
				}
				readAllQuiet(resp)
				if d := time.Since(start).Milliseconds(); d > slowest.Load() {
					slowest.Store(d)
				}
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					other.Add(1)
				}
			}
		}()
	}
	// Each phase lasts until enough requests were served in it, the outage
	// and the recovery from when the limiter logged them.
	served := func(what string, n int64) {
		t.Helper()
		from := ok.Load()
		waitFor(t, 30*time.Second, fmt.Sprintf("%d requests served %s", n, what), func() bool { return ok.Load() >= from+n })
	}
	// Under this load a slow decision may take Redis for down a moment
	// before the kill too, and an outage already under way logs no second
	// line. What the log shows is the limiter's state: down while it holds
	// more "unreachable" lines than "reachable again" ones.
	down := func() bool {
		logs := e.gw.Logs()
		return strings.Count(logs, "rate limiter: redis unreachable") > strings.Count(logs, "rate limiter: redis reachable again")
	}
	served("before the outage", 300)
	rs.Kill()
	waitFor(t, 30*time.Second, "the limiter to log the outage", down)
	served("during the outage", 500)
	rs.Restart()
	waitFor(t, 30*time.Second, "the limiter to log the recovery", func() bool { return !down() })
	served("after the outage", 300)
	close(stop)
	wg.Wait()
	if other.Load() != 0 {
		t.Fatalf("%d requests failed during the outage (%d succeeded)", other.Load(), ok.Load())
	}
	// A bound against hanging (the limiter's decision timeout is
	// milliseconds), not a measure: on a loaded machine a request that did
	// not hang can still take a second.
	if s := slowest.Load(); s > 10_000 {
		t.Fatalf("a request took %d ms: it hung on the dead Redis", s)
	}
	var u usageView
	if !poll.Within(30*time.Second, func() bool {
		u = e.usage(t)
		return u.Key.Requests == ok.Load()
	}) {
		t.Fatalf("after 30 s the usage shows %d requests (%d failed, %d images) for %d answered 200",
			u.Key.Requests, u.Key.Failed, u.Key.Images, ok.Load())
	}
	if u.Key.Images != ok.Load() {
		t.Fatalf("images %d for %d answered requests", u.Key.Images, ok.Load())
	}
	t.Logf("%d requests served across the outage; slowest %d ms", ok.Load(), slowest.Load())
}

// TestHugeUpstreamBodyIsCappedAndFailedOver: a provider answering 100 MB is
// cut at the body cap and the next provider serves.
func TestHugeUpstreamBodyIsCappedAndFailedOver(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetFault(fakeup.Fault{Body: []byte(`{"x":"` + strings.Repeat("A", 100<<20) + `"}`)})
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "dear" {
		t.Fatalf("status %d from %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
}

func readAllQuiet(resp *http.Response) {
	defer resp.Body.Close()
	buf := make([]byte, 32<<10)
	for {
		if _, err := resp.Body.Read(buf); err != nil {
			return
		}
	}
}

// TestBudgetsDuringARedisOutage: with Redis dead, requests of a team with a
// budget are answered (on_outage open), their budget checks made locally
// within what the team had left and counted in
// nanogate_budget_local_reservations_total; with on_outage closed they are
// refused with 503 limiter_unavailable. Timings are logged, not asserted.
func TestBudgetsDuringARedisOutage(t *testing.T) {
	for _, policy := range []string{"open", "closed"} {
		t.Run(policy, func(t *testing.T) {
			rs := redistest.Start(t)
			e := startEnv(t, opts{budget: "{ usd: 0.20, period: monthly }",
				extra: fmt.Sprintf("redis:\n  addrs: [%q]\n  on_outage: %s\n", rs.Addr, policy)})
			resp := e.post(t, chatBody(""))
			readAll(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("before the outage: %d", resp.StatusCode)
			}
			rs.Kill()
			var codes []int
			var slowest time.Duration
			for range 6 {
				start := time.Now()
				resp := e.post(t, chatBody(""))
				readAll(t, resp)
				slowest = max(slowest, time.Since(start))
				codes = append(codes, resp.StatusCode)
			}
			t.Logf("on_outage %s, Redis dead: statuses %v, slowest request %v", policy, codes, slowest)
			_, metrics := do(t, "GET", e.gw.URL+"/metrics", "", "", nil)
			if !strings.Contains(string(metrics), "nanogate_redis_up 0") {
				t.Errorf("nanogate_redis_up is not 0 during the outage")
			}
			switch policy {
			case "open":
				// $0.20 with ~$0.0415 reserved per request: about four
				// fit in what was left, then the local bound refuses.
				if codes[0] != 200 || codes[len(codes)-1] != 429 {
					t.Errorf("statuses %v: want the first served and the last over the local bound", codes)
				}
				if !strings.Contains(string(metrics), "nanogate_budget_local_reservations_total ") ||
					strings.Contains(string(metrics), "nanogate_budget_local_reservations_total 0\n") {
					t.Errorf("no local reservation counted")
				}
			case "closed":
				for _, c := range codes {
					if c != 503 {
						t.Errorf("statuses %v, want 503s", codes)
						break
					}
				}
			}
		})
	}
}
