package proxy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nanogate/internal/redistest"
)

// readiness reads /readyz, checking it is JSON.
func readiness(t *testing.T, ts *testServer) (int, map[string]string) {
	t.Helper()
	r := ts.get(t, "/readyz", "")
	if r.header.Get("Content-Type") != "application/json" {
		t.Errorf("/readyz Content-Type %q", r.header.Get("Content-Type"))
	}
	var v map[string]string
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("/readyz is not JSON: %s", r.body)
	}
	return r.status, v
}

// TestReadyNeedsAUsableProvider: /readyz is 200 ready with a provider to
// route to and 503 naming the reason without one, while /healthz (the
// process is up) is 200 either way. Neither needs a key.
func TestReadyNeedsAUsableProvider(t *testing.T) {
	ts := startServer(t, serverOpts{})
	if code, v := readiness(t, ts); code != 200 || v["status"] != "ready" || len(v) != 1 {
		t.Errorf("with a provider: %d %v", code, v)
	}
	bare := startServer(t, serverOpts{noProvider: true})
	if code, v := readiness(t, bare); code != 503 || v["status"] != "unavailable" || v["reason"] != "no usable provider" {
		t.Errorf("without a provider: %d %v", code, v)
	}
	for _, s := range []*testServer{ts, bare} {
		if r := s.get(t, "/healthz", ""); r.status != 200 || strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
			t.Errorf("/healthz: %d %s", r.status, r.body)
		}
	}
}

// TestReadyFailsWhenUsageRecordsCannotBeKept: a gateway whose usage spool
// cannot be written (its directory is a file) is not ready, and says why.
func TestReadyFailsWhenUsageRecordsCannotBeKept(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, serverOpts{spoolPath: filepath.Join(notDir, "spool.jsonl")})
	code, v := readiness(t, ts)
	if code != 503 || v["status"] != "unavailable" || !strings.HasPrefix(v["reason"], "usage records: accounting spool") {
		t.Errorf("%d %v", code, v)
	}
}

// TestReadyFollowsRedisAsOnOutageSays: with Redis up the gateway is ready;
// with Redis gone it stays ready under on_outage open (saying that limits
// are per replica) and is not ready under on_outage closed. The usage
// APIs, which read Redis, answer 503 usage_unavailable meanwhile, and log
// the failure.
func TestReadyFollowsRedisAsOnOutageSays(t *testing.T) {
	for _, onOutage := range []string{"open", "closed"} {
		t.Run(onOutage, func(t *testing.T) {
			rs := redistest.Start(t)
			ts := startServer(t, serverOpts{redis: rs.Addr, onOutage: onOutage, noBatches: true})
			if code, v := readiness(t, ts); code != 200 || v["status"] != "ready" || len(v) != 1 {
				t.Fatalf("with Redis: %d %v", code, v)
			}
			if r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, "")); r.status != 200 {
				t.Fatalf("chat with Redis: %d %s", r.status, r.body)
			}
			if u := ts.usageOf(t, ciKey); u.Key.Requests != 1 {
				t.Errorf("usage kept in Redis: %+v", u.Key)
			}

			rs.Kill()
			code, v := readiness(t, ts)
			switch onOutage {
			case "open":
				if code != 200 || v["status"] != "ready" || !strings.HasPrefix(v["redis"], "unreachable") {
					t.Errorf("open, Redis gone: %d %v", code, v)
				}
			case "closed":
				if code != 503 || v["status"] != "unavailable" || v["reason"] != "redis unreachable" {
					t.Errorf("closed, Redis gone: %d %v", code, v)
				}
			}
			if onOutage == "open" {
				return // the usage APIs read Redis alike in both modes
			}
			for path, key := range map[string]string{"/v1/usage": ciKey, "/admin/usage": adminKey} {
				wantError(t, ts.get(t, path, key), 503, "server_error", "usage_unavailable", "")
			}
			if n := ts.logs.FilterMessage("usage query failed").Len(); n != 2 {
				t.Errorf("%d usage failures logged, want 2", n)
			}
		})
	}
}
