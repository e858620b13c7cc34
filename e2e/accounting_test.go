package e2e

import (
	"encoding/csv"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"nanogate/internal/fakeup"
)

type usageTotals struct {
	Name             string  `json:"name"`
	Requests         int64   `json:"requests"`
	Failed           int64   `json:"failed"`
	Images           int64   `json:"images"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	ImageTokens      int64   `json:"image_tokens"`
	CostUSD          float64 `json:"cost_usd"`
	ListCostUSD      float64 `json:"list_cost_usd"`
	BudgetUSD        float64 `json:"budget_usd"`
}

type usageView struct {
	Period string      `json:"period"`
	Key    usageTotals `json:"key"`
	Team   usageTotals `json:"team"`
}

func (e *env) usage(t *testing.T) usageView {
	t.Helper()
	var u usageView
	if code := getJSON(t, e.gw.URL+"/v1/usage", clientKey, &u); code != 200 {
		t.Fatalf("/v1/usage: %d", code)
	}
	return u
}

// TestUsageBillsTheServingProvider: two images at the cheap reseller, then a
// failover served by the dearer one, then a request every provider failed.
func TestUsageBillsTheServingProvider(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	e.cheap.SetImages(2)
	readAll(t, e.post(t, chatBody("")))
	e.cheap.SetFault(fakeup.Fault{Status: 500, Times: 1})
	readAll(t, e.post(t, chatBody("")))
	e.cheap.SetFault(fakeup.Fault{Status: 500})
	e.dear.SetFault(fakeup.Fault{Status: 500})
	readAll(t, e.post(t, chatBody("")))
	// cheap: 2 images x $0.035 + 540 prompt x $0.30/M + 8 text x $2.50/M = 0.070162 + 0.00002 = 0.070182
	// dear: 1 image x $0.039 + the same tokens = 0.039182; list cost: no gemini provider, so the same.
	want := usageTotals{Requests: 2, Failed: 1, Images: 3, PromptTokens: 1080, CompletionTokens: 3*1290 + 16, ImageTokens: 3870}
	var u usageView
	waitFor(t, 10*time.Second, "three records", func() bool {
		u = e.usage(t)
		return u.Key.Requests+u.Key.Failed == 3
	})
	got := u.Key
	got.Name, got.CostUSD, got.ListCostUSD, got.BudgetUSD = "", 0, 0, 0
	if got != want {
		t.Fatalf("key totals = %+v, want %+v", got, want)
	}
	if u.Key.CostUSD != 0.109364 {
		t.Fatalf("cost = %v, want 0.109364 (0.070182 at cheap + 0.039182 at dear)", u.Key.CostUSD)
	}
	if u.Team.Name != "design" || u.Team.Images != 3 || u.Period != time.Now().UTC().Format("2006-01") {
		t.Fatalf("team = %+v period %q", u.Team, u.Period)
	}
	// Finance's CSV agrees.
	req, _ := http.NewRequest("GET", e.gw.URL+"/admin/usage?format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(string(readAll(t, resp)))).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("csv: %v %v", err, rows)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	found := false
	for _, r := range rows[1:] {
		if r[col["key"]] == "ci" && r[col["images"]] == "3" && r[col["cost_usd"]] == "0.109364" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no CSV row for key ci with 3 images and $0.109364:\n%v", rows)
	}
}

func TestBudgetRefusesWithInsufficientQuota(t *testing.T) {
	// Each request is reserved at the dearest provider ($0.039 + tokens) and
	// costs ~$0.035: $0.1 admits two, then refuses.
	e := startEnv(t, opts{budget: "{ usd: 0.1, period: monthly }"})
	codes := []int{}
	served := int64(0)
	for i := 0; i < 4; i++ {
		resp := e.post(t, chatBody(""))
		readAll(t, resp)
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 {
			if resp.Header.Get("x-should-retry") != "false" {
				t.Errorf("budget 429 without x-should-retry: false")
			}
		}
		if resp.StatusCode == 200 {
			served++
		}
		waitFor(t, 10*time.Second, "the record to settle its reservation", func() bool { return e.usage(t).Key.Images == served })
	}
	if codes[0] != 200 || codes[1] != 200 || codes[3] != 429 {
		t.Fatalf("statuses %v", codes)
	}
	resp := e.post(t, chatBody(""))
	expectError(t, resp, 429, "insufficient_quota")
}

// TestBudgetHoldsUnderConcurrency: 50 concurrent requests against a budget
// with room for about 3 overspend by at most one request.
func TestBudgetHoldsUnderConcurrency(t *testing.T) {
	e := startEnv(t, opts{budget: "{ usd: 0.12, period: monthly }"})
	e.cheap.SetLatency(200 * time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := e.post(t, chatBody(""))
			readAll(t, resp)
			if resp.StatusCode == 200 {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var u usageView
	waitFor(t, 10*time.Second, "the records", func() bool { u = e.usage(t); return u.Team.Requests == int64(ok) })
	if u.Team.CostUSD > 0.12+0.04 || ok < 2 {
		t.Fatalf("%d admitted, spent $%v against a $0.12 budget", ok, u.Team.CostUSD)
	}
}

func TestEmbeddedUsageSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	e := startEnv(t, opts{dir: dir})
	for i := 0; i < 3; i++ {
		readAll(t, e.post(t, chatBody("")))
	}
	waitFor(t, 10*time.Second, "three records", func() bool { return e.usage(t).Key.Requests == 3 })
	e.gw.Signal(sigterm)
	if code := e.gw.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	e2 := startEnv(t, opts{dir: dir})
	if u := e2.usage(t); u.Key.Requests != 3 || u.Key.Images != 3 {
		t.Fatalf("after a restart: %+v", u.Key)
	}
}

func TestAdminUsageJSON(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	readAll(t, e.post(t, chatBody("")))
	var rep struct {
		Period string `json:"period"`
		Teams  []struct {
			usageTotals
			Keys []usageTotals `json:"keys"`
		} `json:"teams"`
	}
	waitFor(t, 10*time.Second, "the record", func() bool {
		getJSON(t, e.gw.URL+"/admin/usage", adminKey, &rep)
		return len(rep.Teams) > 0 && rep.Teams[0].Requests == 1
	})
	if rep.Teams[0].Name != "design" || len(rep.Teams[0].Keys) == 0 || rep.Teams[0].Keys[0].Name != "ci" {
		t.Fatalf("admin usage %+v", rep)
	}
	if code := getJSON(t, e.gw.URL+"/admin/usage?period=bogus", adminKey, nil); code != 400 {
		t.Fatalf("bad period: %d", code)
	}
}
