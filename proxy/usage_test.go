package proxy

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
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

// TestUsageShowsBudgetsAndAlertThresholds: a key with a budget of its own
// sees it in its own period (daily, where its team's is total), with its
// alert thresholds and those its spend reached; its team's budget shows the
// file's default thresholds; a key without a budget and a team without one
// show none.
func TestUsageShowsBudgetsAndAlertThresholds(t *testing.T) {
	ts := startServer(t, serverOpts{teamDesign: "    budget: { usd: 0.06, period: total }\n"})
	withDirectory(t, ts)
	r := send(t, "POST", ts.url+"/admin/keys", adminKey, "application/json",
		[]byte(`{"name":"own","team":"design","budget":{"usd":1,"period":"daily"},"alert_thresholds":[1,90]}`))
	var k struct{ Key string }
	if json.Unmarshal(r.body, &k); r.status != 201 || k.Key == "" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if c := ts.postJSON(t, "/v1/chat/completions", k.Key, chatBody(testModel, ""), "x-request-id", "trace-u-own"); c.status != 200 {
		t.Fatalf("chat: %d %s", c.status, c.body)
	}
	ts.flush(t)
	cost := ts.requestLine(t, "trace-u-own")["cost_micros"].(int64)

	type budgetView struct {
		Name      string   `json:"name"`
		BudgetUSD *float64 `json:"budget_usd"`
		Period    string   `json:"budget_period"`
		Current   string   `json:"budget_current_period"`
		Spent     *float64 `json:"budget_spent_usd"`
		Reserved  *float64 `json:"reserved_usd"`
		Remaining *float64 `json:"remaining_usd"`
		ResetsAt  string   `json:"budget_resets_at"`
		Alerts    []int    `json:"alert_thresholds"`
		Reached   []int    `json:"alert_thresholds_reached"`
		Requests  int64    `json:"requests"`
	}
	var u struct {
		Period string      `json:"period"`
		Key    budgetView  `json:"key"`
		Team   *budgetView `json:"team"`
	}
	get := func(key string) {
		t.Helper()
		u.Key, u.Team = budgetView{}, nil
		r := ts.get(t, "/v1/usage", key)
		if r.status != 200 {
			t.Fatalf("usage: %d %s", r.status, r.body)
		}
		decode(t, r, &u)
	}
	get(k.Key)
	now := time.Now().UTC()
	if u.Period != "total" || u.Key.Name != "own" || u.Key.Requests != 1 || u.Key.BudgetUSD == nil || *u.Key.BudgetUSD != 1 ||
		u.Key.Period != "daily" || (u.Key.Current != accounting.Day(now) && u.Key.Current != accounting.Day(now.Add(-time.Minute))) ||
		*u.Key.Spent != float64(cost)/1e6 || u.Key.Reserved == nil || *u.Key.Reserved != 0 ||
		*u.Key.Remaining != float64(1_000_000-cost)/1e6 || u.Key.ResetsAt == "" ||
		!slices.Equal(u.Key.Alerts, []int{1, 90}) || !slices.Equal(u.Key.Reached, []int{1}) {
		t.Errorf("key own: %+v (cost %d)", u.Key, cost)
	}
	// The file's team uses the default thresholds; $0.06 against one
	// request's cost.
	var want []int
	for _, pct := range []int{50, 80, 100} {
		if cost*100 >= 60_000*int64(pct) {
			want = append(want, pct)
		}
	}
	if cost < 30_000 || cost >= 60_000 {
		t.Fatalf("cost %d: the test wants one request between 50%% and 100%% of $0.06", cost)
	}
	if u.Team == nil || !slices.Equal(u.Team.Alerts, []int{50, 80, 100}) || !slices.Equal(u.Team.Reached, want) ||
		*u.Team.BudgetUSD != 0.06 || u.Team.Requests != 1 {
		t.Errorf("team design: %+v, want reached %v", u.Team, want)
	}

	// A key of the file: no budget of its own, its team's thresholds.
	get(ciKey)
	if u.Key.BudgetUSD != nil || u.Key.Alerts != nil || u.Team == nil || !slices.Equal(u.Team.Reached, want) {
		t.Errorf("ci: key %+v team %+v", u.Key, u.Team)
	}
	// A team without a budget: nothing to alert on.
	get(opsKey)
	if u.Key.Alerts != nil || u.Team == nil || u.Team.Alerts != nil || u.Team.Reached != nil || u.Team.BudgetUSD != nil {
		t.Errorf("ops: key %+v team %+v", u.Key, u.Team)
	}
}
