package proxy

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strconv"
	"testing"
	"time"

	"nanogate/accounting"
)

// adminReport is the part of GET /admin/usage the tests read.
type adminReport struct {
	Period   string  `json:"period"`
	From     string  `json:"from"`
	To       string  `json:"to"`
	Requests int64   `json:"requests"`
	Images   int64   `json:"images"`
	CostUSD  float64 `json:"cost_usd"`
	Teams    []struct {
		Name      string   `json:"name"`
		Requests  int64    `json:"requests"`
		BudgetUSD *float64 `json:"budget_usd"`
		Keys      []struct {
			Name     string `json:"name"`
			Requests int64  `json:"requests"`
			Days     []struct {
				Day      string `json:"day"`
				Requests int64  `json:"requests"`
			} `json:"days"`
		} `json:"keys"`
		Sizes []struct {
			Model string `json:"model"`
			Size  string `json:"size"`
		} `json:"sizes"`
	} `json:"teams"`
}

// usageRequests makes one chat completion as ci and one image as ops and
// returns what each cost, as logged.
func usageRequests(t *testing.T, ts *testServer) (ciCost, opsCost int64) {
	t.Helper()
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-request-id", "trace-u-ci")
	if r.status != 200 {
		t.Fatalf("chat: %d %s", r.status, r.body)
	}
	r = ts.postJSON(t, "/v1/images/generations", opsKey, `{"prompt":"x","size":"1792x1024"}`, "x-request-id", "trace-u-ops")
	if r.status != 200 {
		t.Fatalf("image: %d %s", r.status, r.body)
	}
	ts.flush(t)
	return ts.requestLine(t, "trace-u-ci")["cost_micros"].(int64), ts.requestLine(t, "trace-u-ops")["cost_micros"].(int64)
}

// TestUsageShowsTheKeyAndItsTeamBudget: GET /v1/usage is the caller's key
// and its team over the team's budget period, with the budget spent and
// what remains; a key of the same team sees the team's totals and its
// own, and a team without a budget shows none.
func TestUsageShowsTheKeyAndItsTeamBudget(t *testing.T) {
	ts := startServer(t, serverOpts{teamDesign: "    budget: { usd: 10, period: total }\n"})
	ciCost, opsCost := usageRequests(t, ts)

	u := ts.usageOf(t, ciKey)
	if u.Period != "total" || u.Key.Name != "ci" || u.Key.Requests != 1 || u.Key.Images != 1 || u.Key.CostUSD != float64(ciCost)/1e6 {
		t.Errorf("ci: %+v", u)
	}
	if u.Team == nil || u.Team.Name != "design" || u.Team.Requests != 1 || u.Team.BudgetUSD == nil || *u.Team.BudgetUSD != 10 ||
		u.Team.BudgetPeriod != "total" || *u.Team.BudgetSpentUSD != float64(ciCost)/1e6 ||
		*u.Team.RemainingUSD != float64(10_000_000-ciCost)/1e6 {
		t.Errorf("design: %+v", u.Team)
	}
	n := ts.usageOf(t, narrowKey)
	if n.Key.Name != "narrow" || n.Key.Requests != 0 || n.Team == nil || n.Team.Requests != 1 {
		t.Errorf("narrow: %+v team %+v", n.Key, n.Team)
	}
	o := ts.usageOf(t, opsKey)
	if o.Period != accounting.Month(time.Now()) && o.Period != accounting.Month(time.Now().Add(-time.Hour)) {
		t.Errorf("ops period %q, want the month", o.Period)
	}
	if o.Key.Requests != 1 || o.Key.CostUSD != float64(opsCost)/1e6 || o.Team == nil || o.Team.Name != "ops" || o.Team.BudgetUSD != nil {
		t.Errorf("ops: %+v team %+v", o.Key, o.Team)
	}
}

// TestAdminUsageReportsEveryTeamAsJSON: GET /admin/usage lists every
// configured team with its keys and totals, the budget where there is one;
// team= narrows it to one team, from= gives one row per day.
func TestAdminUsageReportsEveryTeamAsJSON(t *testing.T) {
	ts := startServer(t, serverOpts{teamDesign: "    budget: { usd: 10, period: total }\n"})
	ciCost, opsCost := usageRequests(t, ts)

	r := ts.get(t, "/admin/usage?period=total", adminKey)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	var rep adminReport
	decode(t, r, &rep)
	if rep.Period != "total" || rep.Requests != 2 || rep.Images != 2 || rep.CostUSD != float64(ciCost+opsCost)/1e6 || len(rep.Teams) != 2 {
		t.Fatalf("report %s", r.body)
	}
	for _, tm := range rep.Teams {
		switch tm.Name {
		case "design":
			if tm.Requests != 1 || tm.BudgetUSD == nil || *tm.BudgetUSD != 10 || len(tm.Keys) != 1 || tm.Keys[0].Name != "ci" ||
				len(tm.Sizes) != 1 || tm.Sizes[0].Model != testModel || tm.Sizes[0].Size == "" {
				t.Errorf("design %+v", tm)
			}
		case "ops":
			if tm.Requests != 1 || tm.BudgetUSD != nil || len(tm.Keys) != 1 || tm.Keys[0].Name != "ops" {
				t.Errorf("ops %+v", tm)
			}
		default:
			t.Errorf("team %q", tm.Name)
		}
	}

	decode(t, ts.get(t, "/admin/usage?period=total&team=ops", adminKey), &rep)
	if len(rep.Teams) != 1 || rep.Teams[0].Name != "ops" || rep.Requests != 1 {
		t.Errorf("team=ops: %+v", rep)
	}

	from := accounting.Day(time.Now().Add(-48 * time.Hour))
	r = ts.get(t, "/admin/usage?format=json&from="+from, adminKey)
	rep = adminReport{}
	decode(t, r, &rep)
	if r.status != 200 || rep.From != from || rep.To < from || len(rep.Teams) != 2 {
		t.Fatalf("from=%s: %d %s", from, r.status, r.body)
	}
	for _, tm := range rep.Teams {
		for _, k := range tm.Keys {
			var sum int64
			for _, d := range k.Days {
				sum += d.Requests
			}
			if len(k.Days) < 3 || sum != k.Requests || k.Requests != 1 {
				t.Errorf("key %s: %d requests over days %+v", k.Name, k.Requests, k.Days)
			}
		}
	}
}

// readCSV parses a CSV answer.
func readCSV(t *testing.T, r reply) [][]string {
	t.Helper()
	if r.status != 200 || r.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		r.header.Get("Content-Disposition") != `attachment; filename="nanogate-usage.csv"` {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatalf("not CSV (%v): %s", err, r.body)
	}
	return rows
}

// TestAdminUsageAsCSV: format=csv is a download with one row per team and
// key (period total), or with by=size per team, model and image size, with
// exact decimal money.
func TestAdminUsageAsCSV(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ciCost, opsCost := usageRequests(t, ts)
	usd := func(micros int64) string { return accounting.FormatUSD(micros) }

	rows := readCSV(t, ts.get(t, "/admin/usage?period=total&format=csv", adminKey))
	want := [][]string{accounting.CSVHeader,
		{"total", "design", "ci", "1", "0", "1", "540", strconv.Itoa(8 + 1290), "1290", usd(ciCost)},
		{"total", "ops", "ops", "1", "0", "1", "540", strconv.Itoa(8 + 1290), "1290", usd(opsCost)}}
	if len(rows) != len(want) || !slices.Equal(rows[0], want[0]) {
		t.Fatalf("rows %q", rows)
	}
	for i := 1; i < len(want); i++ {
		if !slices.Equal(rows[i][:len(want[i])], want[i]) || len(rows[i]) != len(accounting.CSVHeader) {
			t.Errorf("row %d %q, want it to start %q", i, rows[i], want[i])
		}
	}

	rows = readCSV(t, ts.get(t, "/admin/usage?period=total&format=csv&by=size", adminKey))
	if len(rows) != 3 || !slices.Equal(rows[0], accounting.CSVSizesHeader) {
		t.Fatalf("by=size rows %q", rows)
	}
	for i, team := range []string{"design", "ops"} {
		row := rows[i+1]
		if row[0] != "total" || row[1] != team || row[2] != testModel || row[3] == "" || row[4] != "1" {
			t.Errorf("by=size row %q", row)
		}
	}
	// by=key is the default.
	if a, b := ts.get(t, "/admin/usage?period=total&format=csv&by=key", adminKey), ts.get(t, "/admin/usage?period=total&format=csv", adminKey); !bytes.Equal(a.body, b.body) {
		t.Errorf("by=key differs from the default:\n%s\n%s", a.body, b.body)
	}
}

// TestAdminUsageRefusesBadQueries: a period, range, format or by it does
// not know is a 400 in OpenAI's envelope.
func TestAdminUsageRefusesBadQueries(t *testing.T) {
	ts := startServer(t, serverOpts{})
	for q, param := range map[string]string{
		"period=2026-13":                   "",
		"period=soon":                      "",
		"from=2026-01-02&to=2026-01-01":    "",
		"to=2026-01-01":                    "",
		"period=total&from=2026-01-01":     "",
		"from=2020-01-01&to=2026-01-01":    "",
		"format=xml":                       "format",
		"by=team":                          "by",
		"format=csv&by=model":              "by",
		"period=total&format=csv&by=teams": "by",
	} {
		t.Run(q, func(t *testing.T) {
			wantError(t, ts.get(t, "/admin/usage?"+q, adminKey), 400, "invalid_request_error", "invalid_request", param)
		})
	}
}

// TestUsageIsAbsentWithoutAccounting: without usage tracking both usage
// APIs answer 404 saying so, while requests are still served.
func TestUsageIsAbsentWithoutAccounting(t *testing.T) {
	ts := startServer(t, serverOpts{noAccounting: true})
	if r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, "")); r.status != 200 {
		t.Fatalf("chat: %d %s", r.status, r.body)
	}
	for path, key := range map[string]string{"/v1/usage": ciKey, "/admin/usage": adminKey} {
		msg := wantError(t, ts.get(t, path, key), 404, "invalid_request_error", "not_found", "")
		if msg != "Usage tracking is not configured." {
			t.Errorf("%s: %q", path, msg)
		}
	}
}
