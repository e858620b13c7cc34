package e2e

import (
	"testing"

	"nanogate/internal/fakeup"
)

// longAdminKey is an admin key of a length the gateway accepts for admin keys.
const longAdminKey = "admin-e2e-fetch-secret-0123456789"

// benchView is the part of /admin/providers these tests read.
type benchView struct {
	Providers []struct {
		Name              string
		State             string
		Requests          int64
		Failures          int64
		BenchedForSeconds float64 `json:"benched_for_seconds"`
	} `json:"providers"`
}

// TestHugeRetryAfterBenchesForAMinuteAtMost: an upstream answering 429 with
// retry-after: 999999999 (31 years) is benched for routing.health.
// max_retry_after (60s by default), and the request is served by the other
// provider.
func TestHugeRetryAfterBenchesForAMinuteAtMost(t *testing.T) {
	e := startEnv(t, opts{adminKey: longAdminKey})
	e.cheap.SetFault(fakeup.Fault{Status: 429, Header: map[string]string{"retry-after": "999999999"}, Times: 1})
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "dear" {
		t.Fatalf("status %d from %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
	var v benchView
	if getJSON(t, e.gw.URL+"/admin/providers", longAdminKey, &v) != 200 {
		t.Fatal("admin/providers")
	}
	if p := v.Providers[0]; p.Name != "cheap" || p.BenchedForSeconds <= 0 || p.BenchedForSeconds > 60 {
		t.Fatalf("cheap = %+v, want benched for at most 60s", p)
	}
}
