package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"nanogate/internal/fakeup"
)

const adminKey = "admin-e2e-secret-0123456789-777"

func getJSON(t *testing.T, url, bearer string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

type providersView struct {
	Providers []struct {
		Name, Kind, State   string
		PerImageUSD         float64 `json:"price_per_image_usd"`
		Requests, Failures  int64
		ConsecutiveFailures int     `json:"consecutive_failures"`
		P50MS               float64 `json:"p50_ms"`
		LastError           string  `json:"last_error"`
		TrialInSeconds      float64 `json:"trial_in_seconds"`
	} `json:"providers"`
}

// TestCircuitOpensAndClosesAfterTrial: the failing reseller stops getting
// traffic after the threshold, every request still answers 200 from Google's
// stand-in, and after the cooldown one trial closes the circuit again.
func TestCircuitOpensAndClosesAfterTrial(t *testing.T) {
	e := startEnv(t, opts{threshold: 2, cooldown: "1s", adminKey: adminKey})
	e.cheap.SetFault(fakeup.Fault{Status: 500})
	for i := 0; i < 6; i++ {
		resp := e.post(t, chatBody(""))
		readAll(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "dear" {
			t.Fatalf("request %d: %d from %q", i, resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
		}
	}
	if n := e.cheap.Requests(); n != 2 {
		t.Fatalf("failing provider got %d requests, want 2 (the threshold)", n)
	}
	var pv providersView
	if getJSON(t, e.gw.URL+"/admin/providers", adminKey, &pv) != 200 {
		t.Fatal("admin/providers")
	}
	if p := pv.Providers[0]; p.Name != "cheap" || p.State != "open" || p.Failures != 2 || p.TrialInSeconds <= 0 || p.PerImageUSD != 0.035 {
		t.Fatalf("cheap = %+v", p)
	}
	if strings.Contains(pv.Providers[0].LastError, upstreamK1) || strings.Contains(pv.Providers[0].LastError, "127.0.0.1") {
		t.Fatalf("last_error leaks: %q", pv.Providers[0].LastError)
	}
	e.cheap.ClearFault()
	waitCooldown(t, e)
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.Header.Get("x-nanogate-provider") != "cheap" {
		t.Fatalf("trial not sent to the recovered provider")
	}
	getJSON(t, e.gw.URL+"/admin/providers", adminKey, &pv)
	if pv.Providers[0].State != "healthy" {
		t.Fatalf("circuit not closed after a good trial: %+v", pv.Providers[0])
	}
	waitLog(t, e.gw, `"to":"open"`)
	waitLog(t, e.gw, `"to":"half_open"`)
}

// waitCooldown waits until the cooldown of the first provider's open
// circuit is over: a trial is due.
func waitCooldown(t *testing.T, e *env) {
	t.Helper()
	waitFor(t, 10*time.Second, "the open circuit's cooldown to end", func() bool {
		var pv providersView
		if getJSON(t, e.gw.URL+"/admin/providers", adminKey, &pv) != 200 {
			t.Fatal("admin/providers")
		}
		p := pv.Providers[0]
		return p.State == "open" && p.TrialInSeconds == 0
	})
}

func TestHundredConcurrentAtHalfOpenMakeOneTrial(t *testing.T) {
	e := startEnv(t, opts{threshold: 1, cooldown: "1s", adminKey: adminKey})
	e.cheap.SetFault(fakeup.Fault{Status: 500, Times: 1})
	readAll(t, e.post(t, chatBody("")))
	waitCooldown(t, e)
	e.cheap.Reset()
	// The trial is held in flight until the other 99 have been answered:
	// on a loaded machine, sending them can take longer than any fixed wait.
	e.cheap.SetLatency(5 * time.Second)
	var mu sync.Mutex
	codes := map[int]int{}
	send := func() {
		resp := e.post(t, chatBody(""))
		readAll(t, resp)
		mu.Lock()
		codes[resp.StatusCode]++
		mu.Unlock()
	}
	var trial sync.WaitGroup
	trial.Add(1)
	go func() { defer trial.Done(); send() }()
	waitFor(t, 10*time.Second, "the trial in flight", func() bool { return e.cheap.InFlight() == 1 })
	var others sync.WaitGroup
	for i := 0; i < 99; i++ {
		others.Add(1)
		go func() { defer others.Done(); send() }()
	}
	others.Wait()
	if n := e.cheap.InFlight(); n != 1 {
		t.Errorf("%d requests in flight at the half-open provider once the others were answered, want the trial alone", n)
	}
	trial.Wait()
	if n := e.cheap.Requests(); n != 1 {
		t.Fatalf("half-open provider got %d requests, want exactly 1 trial", n)
	}
	if codes[200] != 100 {
		t.Fatalf("status codes %v", codes)
	}
}

func TestAdminAndMetrics(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	readAll(t, e.post(t, chatBody("")))
	if code := getJSON(t, e.gw.URL+"/admin/providers", "", nil); code != 401 {
		t.Errorf("admin without key: %d", code)
	}
	if code := getJSON(t, e.gw.URL+"/admin/providers", clientKey, nil); code != 401 {
		t.Errorf("admin with a client key: %d", code)
	}
	resp, err := client.Get(e.gw.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readAll(t, resp))
	for _, want := range []string{
		`nanogate_requests_total{model="gemini-2.5-flash-image-preview",provider="cheap",route="chat",status="200"} 1`,
		`nanogate_images_total{model="gemini-2.5-flash-image-preview",provider="cheap",size="1K"} 1`,
		`nanogate_tokens_total{kind="image",model="gemini-2.5-flash-image-preview",provider="cheap"} 1290`,
		`nanogate_circuit_state{provider="cheap"} 0`,
		`nanogate_upstream_duration_seconds_count{outcome="ok",provider="cheap"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Teams are labels (bounded by the config); keys never are.
	for _, secret := range []string{clientKey, `="ci"`, upstreamK1} {
		if strings.Contains(text, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
	// A model the client made up does not become a label.
	readAll(t, e.post(t, `{"model":"made-up-`+strings.Repeat("x", 20)+`","messages":[{"role":"user","content":"x"}]}`))
	resp, _ = client.Get(e.gw.URL + "/metrics")
	if strings.Contains(string(readAll(t, resp)), "made-up-") {
		t.Error("an unknown model name became a metric label")
	}
}

func TestAdminDisabledWithoutKey(t *testing.T) {
	e := startEnv(t, opts{})
	if code := getJSON(t, e.gw.URL+"/admin/providers", "anything", nil); code != 404 {
		t.Errorf("admin without admin_key configured: %d, want 404", code)
	}
}

func TestReadyzFollowsProviders(t *testing.T) {
	e := startEnv(t, opts{threshold: 1, cooldown: "60s", maxAttempts: 3})
	e.cheap.SetFault(fakeup.Fault{Status: 500})
	e.dear.SetFault(fakeup.Fault{Status: 500})
	readAll(t, e.post(t, chatBody("")))
	if code := getJSON(t, e.gw.URL+"/readyz", "", nil); code != 503 {
		t.Fatalf("readyz with every circuit open: %d", code)
	}
	expectError(t, e.post(t, chatBody("")), 503, "no_provider_available")
}
