package accounting

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"nanogate/config"
	"nanogate/internal/safemath"
)

// ErrBadQuery marks a usage query the client got wrong (HTTP 400).
var ErrBadQuery = errors.New("invalid usage query")

// MaxRangeDays is the longest from..to range: daily buckets are kept
// DefaultDayRetention.
const MaxRangeDays = 400

// TeamInfo is a configured team, listed in the admin report even before
// its first request, with its budget.
type TeamInfo struct {
	Name   string
	Budget *config.Budget // nil without a budget
}

// KeyQuery asks for GET /v1/usage: one key and its team, for the team's
// current budget period (the current month without a budget).
type KeyQuery struct {
	Key  string
	Team string // "" for a key without a team: "team" is null
	// Budget is the team's, nil without one.
	Budget *config.Budget
	Now    time.Time
}

// KeyUsage renders GET /v1/usage:
//
//	{"period":"2026-11","key":{"name":"design-ci",...totals},
//	 "team":{"name":"design","budget_usd":500,...budget,...totals}}
func KeyUsage(ctx context.Context, s Store, q KeyQuery) ([]byte, error) {
	kind := "monthly"
	if q.Budget != nil {
		kind = q.Budget.Period
	}
	period := BudgetPeriod(kind, q.Now)
	bs, err := s.Read(ctx, q.Team, []string{period})
	if err != nil {
		return nil, err
	}
	b := bs[0]
	var key Totals
	if t := b.Keys[q.Key]; t != nil {
		key = *t
	}
	out := []byte(`{"period":`)
	out = appendString(out, period)
	out = append(out, `,"key":{"name":`...)
	out = appendString(out, q.Key)
	out = append(out, ',')
	out = appendTotals(out, &key)
	out = append(out, `},"team":`...)
	if q.Team == "" {
		out = append(out, "null"...)
	} else {
		out = append(out, `{"name":`...)
		out = appendString(out, q.Team)
		out = append(out, ',')
		if q.Budget != nil {
			st, err := budgetStatus(ctx, s, q.Team, q.Budget, q.Now, b)
			if err != nil {
				return nil, err
			}
			out = st.append(out)
		}
		out = appendTotals(out, &b.Team)
		out = appendSizes(out, sorted(b.Sizes))
		out = append(out, '}')
	}
	return append(out, '}'), nil
}

// budgetState is a team's budget in its current period.
type budgetState struct {
	b        *config.Budget
	period   string
	spent    int64
	reserved int64
	resets   time.Time
}

// budgetStatus reads the budget's current period; cur is that period's
// bucket when the caller has it already.
func budgetStatus(ctx context.Context, s Store, team string, b *config.Budget, now time.Time, cur *Bucket) (budgetState, error) {
	st := budgetState{b: b, period: BudgetPeriod(b.Period, now), resets: PeriodEnd(b.Period, now)}
	if cur == nil || cur.Period != st.period {
		bs, err := s.Read(ctx, team, []string{st.period})
		if err != nil {
			return st, err
		}
		cur = bs[0]
	}
	st.spent = cur.Team.CostMicros
	r, err := s.Reserved(ctx, team, "")
	if err != nil {
		return st, err
	}
	st.reserved = r
	return st, nil
}

func (st budgetState) append(b []byte) []byte {
	budget := budgetMicros(*st.b)
	kind := st.b.Period
	if kind == "" {
		kind = "monthly"
	}
	b = append(b, `"budget_usd":`...)
	b = AppendUSD(b, budget)
	b = append(b, `,"budget_period":`...)
	b = appendString(b, kind)
	b = append(b, `,"budget_current_period":`...)
	b = appendString(b, st.period)
	b = append(b, `,"budget_spent_usd":`...)
	b = AppendUSD(b, st.spent)
	b = append(b, `,"reserved_usd":`...)
	b = AppendUSD(b, st.reserved)
	b = append(b, `,"remaining_usd":`...)
	b = AppendUSD(b, max(safemath.Sub(budget, safemath.Add(st.spent, st.reserved)), 0))
	if !st.resets.IsZero() {
		b = append(b, `,"budget_resets_at":`...)
		b = appendString(b, st.resets.Format(time.RFC3339))
	}
	return append(b, ',')
}

// AdminQuery asks for GET /admin/usage.
type AdminQuery struct {
	Team string // only this team; "" every team
	// Period is a month "2026-11", a day "2026-11-25" or "total"; "" with
	// no range is the current month.
	Period string
	// From and To are days, inclusive: totals over the range, with one
	// row per day.
	From, To string
	// Teams are the configured teams, listed even without usage.
	Teams []TeamInfo
	Now   time.Time
}

// ParseAdminQuery checks the query parameters of GET /admin/usage (team,
// period, from, to); a to without a from is an error, a from without a to
// runs to today. Errors wrap ErrBadQuery.
func ParseAdminQuery(team, period, from, to string, now time.Time) (AdminQuery, error) {
	q := AdminQuery{Team: team, Period: period, From: from, To: to, Now: now}
	bad := func(format string, a ...any) (AdminQuery, error) {
		return q, fmt.Errorf("%w: "+format, append([]any{ErrBadQuery}, a...)...)
	}
	if from == "" && to == "" {
		if period != "" && period != PeriodTotal && !isMonth(period) && !isDay(period) {
			return bad("period %q is not a month (2026-11), a day (2026-11-25) or total", period)
		}
		return q, nil
	}
	if period != "" {
		return bad("period and from/to exclude each other")
	}
	if from == "" {
		return bad("to without from")
	}
	if q.To == "" {
		q.To = Day(now)
	}
	if !isDay(q.From) || !isDay(q.To) {
		return bad("from and to are days such as 2026-11-25")
	}
	if q.From > q.To {
		return bad("from %s is after to %s", q.From, q.To)
	}
	if n := len(days(q.From, q.To)); n > MaxRangeDays {
		return bad("the range spans %d days; at most %d", n, MaxRangeDays)
	}
	return q, nil
}

func isMonth(s string) bool {
	_, err := time.Parse("2006-01", s)
	return err == nil && len(s) == 7
}

func isDay(s string) bool {
	_, err := time.Parse(time.DateOnly, s)
	return err == nil && len(s) == 10
}

// days lists the days from..to, inclusive (valid days, from <= to).
func days(from, to string) []string {
	f, _ := time.Parse(time.DateOnly, from)
	t, _ := time.Parse(time.DateOnly, to)
	var out []string
	for d := f; !d.After(t) && len(out) <= MaxRangeDays; d = d.AddDate(0, 0, 1) {
		out = append(out, Day(d))
	}
	return out
}

// daysOfMonth lists the days of a month "2026-11".
func daysOfMonth(month string) []string {
	f, _ := time.Parse("2006-01", month)
	return days(Day(f), Day(f.AddDate(0, 1, -1)))
}

// Report is GET /admin/usage: totals of every team and key, with model and
// provider totals per team and across teams.
type Report struct {
	Period string // "2026-11", "2026-11-25", "total" or "2026-11-01/2026-11-25"
	From   string // set for a range
	To     string
	// Ranged reports carry Days in the JSON.
	Ranged    bool
	Totals    Totals
	Models    []Named
	Providers []Named
	// Sizes are the models at each image size (Named.Name is a SizeKey).
	Sizes []Named
	Teams []TeamReport
}

// Named is the totals of one key, model or provider.
type Named struct {
	Name   string
	Totals Totals
	Days   []DayTotals // keys only: the daily rows
}

// DayTotals is one day's totals.
type DayTotals struct {
	Day    string
	Totals Totals
}

// TeamReport is one team in a Report.
type TeamReport struct {
	Name      string
	budget    *budgetState
	Totals    Totals
	Keys      []Named
	Models    []Named
	Providers []Named
	Sizes     []Named     // by SizeKey
	Days      []DayTotals // a range's, or a month's or a day's for the CSV
}

// Admin builds the report of GET /admin/usage; q comes from
// ParseAdminQuery, with Teams and Now set by the caller.
func Admin(ctx context.Context, s Store, q AdminQuery) (*Report, error) {
	rep := &Report{Period: q.Period}
	var dayList []string
	switch {
	case q.From != "":
		rep.From, rep.To, rep.Ranged = q.From, q.To, true
		rep.Period = q.From + "/" + q.To
		dayList = days(q.From, q.To)
	case q.Period == "":
		rep.Period = Month(q.Now)
		dayList = daysOfMonth(rep.Period)
	case isMonth(q.Period):
		dayList = daysOfMonth(q.Period)
	case isDay(q.Period):
		dayList = []string{q.Period}
	}

	budgets := map[string]*config.Budget{}
	names, err := s.Teams(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range q.Teams {
		budgets[t.Name] = t.Budget
		names = append(names, t.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)

	models, providers, sizes := map[string]*Totals{}, map[string]*Totals{}, map[string]*Totals{}
	for _, name := range names {
		if q.Team != "" && name != q.Team {
			continue
		}
		tr, err := teamReport(ctx, s, name, rep, dayList)
		if err != nil {
			return nil, err
		}
		if b := budgets[name]; b != nil {
			st, err := budgetStatus(ctx, s, name, b, q.Now, nil)
			if err != nil {
				return nil, err
			}
			tr.budget = &st
		}
		rep.Totals.Add(tr.Totals)
		for _, n := range tr.Models {
			addTo(models, n.Name, n.Totals)
		}
		for _, n := range tr.Providers {
			addTo(providers, n.Name, n.Totals)
		}
		for _, n := range tr.Sizes {
			addTo(sizes, n.Name, n.Totals)
		}
		rep.Teams = append(rep.Teams, tr)
	}
	rep.Models, rep.Providers, rep.Sizes = sorted(models), sorted(providers), sorted(sizes)
	return rep, nil
}

// teamReport reads one team: the period's bucket (or the range's days
// summed) and the daily buckets.
func teamReport(ctx context.Context, s Store, team string, rep *Report, dayList []string) (TeamReport, error) {
	tr := TeamReport{Name: team}
	periods := dayList
	if !rep.Ranged {
		periods = append([]string{rep.Period}, dayList...)
	}
	bs, err := s.Read(ctx, team, periods)
	if err != nil {
		return tr, err
	}
	sum := newBucket(rep.Period)
	if rep.Ranged {
		for _, b := range bs {
			sum.merge(b)
		}
	} else {
		sum, bs = bs[0], bs[1:]
	}
	tr.Totals = sum.Team
	tr.Models, tr.Providers, tr.Sizes = sorted(sum.Models), sorted(sum.Providers), sorted(sum.Sizes)
	keyDays := map[string][]DayTotals{}
	for _, b := range bs {
		tr.Days = append(tr.Days, DayTotals{b.Period, b.Team})
		for name := range sum.Keys {
			var t Totals
			if kt := b.Keys[name]; kt != nil {
				t = *kt
			}
			keyDays[name] = append(keyDays[name], DayTotals{b.Period, t})
		}
	}
	tr.Keys = sorted(sum.Keys)
	for i := range tr.Keys {
		tr.Keys[i].Days = keyDays[tr.Keys[i].Name]
	}
	return tr, nil
}

func (b *Bucket) merge(o *Bucket) {
	b.Team.Add(o.Team)
	for _, pair := range [][2]map[string]*Totals{{b.Keys, o.Keys}, {b.Models, o.Models}, {b.Providers, o.Providers}, {b.Sizes, o.Sizes}} {
		for name, t := range pair[1] {
			addTo(pair[0], name, *t)
		}
	}
}

func addTo(m map[string]*Totals, name string, t Totals) {
	if m[name] == nil {
		m[name] = &Totals{}
	}
	m[name].Add(t)
}

func sorted(m map[string]*Totals) []Named {
	out := make([]Named, 0, len(m))
	for name, t := range m {
		out = append(out, Named{Name: name, Totals: *t})
	}
	slices.SortFunc(out, func(a, b Named) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// JSON renders the report:
//
//	{"period":"2026-11",...totals,"models":[...],"providers":[...],
//	 "teams":[{"name":"design",...budget,...totals,"keys":[{"name":"design-ci",...totals}],
//	           "models":[...],"providers":[...]}]}
//
// A range adds "from", "to" and "days" ([{"day":"2026-11-01",...totals}],
// one per day of the range) to every team and key.
func (r *Report) JSON() []byte {
	b := []byte(`{"period":`)
	b = appendString(b, r.Period)
	if r.Ranged {
		b = append(b, `,"from":`...)
		b = appendString(b, r.From)
		b = append(b, `,"to":`...)
		b = appendString(b, r.To)
	}
	b = append(b, ',')
	b = appendTotals(b, &r.Totals)
	b = appendNamedList(b, "models", r.Models, false)
	b = appendNamedList(b, "providers", r.Providers, false)
	b = appendSizes(b, r.Sizes)
	b = append(b, `,"teams":[`...)
	for i := range r.Teams {
		t := &r.Teams[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, t.Name)
		b = append(b, ',')
		if t.budget != nil {
			b = t.budget.append(b)
		}
		b = appendTotals(b, &t.Totals)
		b = appendNamedList(b, "keys", t.Keys, r.Ranged)
		b = appendNamedList(b, "models", t.Models, false)
		b = appendNamedList(b, "providers", t.Providers, false)
		b = appendSizes(b, t.Sizes)
		if r.Ranged {
			b = appendDays(b, t.Days)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func appendNamedList(b []byte, field string, list []Named, days bool) []byte {
	b = append(b, `,"`...)
	b = append(b, field...)
	b = append(b, `":[`...)
	for i := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, list[i].Name)
		b = append(b, ',')
		b = appendTotals(b, &list[i].Totals)
		if days {
			b = appendDays(b, list[i].Days)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendSizes writes "sizes":[{"model":...,"size":...,totals}].
func appendSizes(b []byte, list []Named) []byte {
	b = append(b, `,"sizes":[`...)
	for i := range list {
		if i > 0 {
			b = append(b, ',')
		}
		model, size := SplitSizeKey(list[i].Name)
		b = append(b, `{"model":`...)
		b = appendString(b, model)
		b = append(b, `,"size":`...)
		b = appendString(b, size)
		b = append(b, ',')
		b = appendTotals(b, &list[i].Totals)
		b = append(b, '}')
	}
	return append(b, ']')
}

func appendDays(b []byte, ds []DayTotals) []byte {
	b = append(b, `,"days":[`...)
	for i := range ds {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"day":`...)
		b = appendString(b, ds[i].Day)
		b = append(b, ',')
		b = appendTotals(b, &ds[i].Totals)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendTotals appends the totals as JSON members (no braces):
// requests, failed, images, prompt_tokens, completion_tokens, image_tokens,
// cost_usd, list_cost_usd, savings_usd.
func appendTotals(b []byte, t *Totals) []byte {
	for _, f := range []struct {
		name string
		v    int64
	}{{"requests", t.Requests}, {"failed", t.Failed}, {"images", t.Images}, {"prompt_tokens", t.PromptTokens},
		{"completion_tokens", t.CompletionTokens}, {"image_tokens", t.ImageTokens}} {
		b = append(b, '"')
		b = append(b, f.name...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, f.v, 10)
		b = append(b, ',')
	}
	b = append(b, `"cost_usd":`...)
	b = AppendUSD(b, t.CostMicros)
	b = append(b, `,"list_cost_usd":`...)
	b = AppendUSD(b, t.ListCostMicros)
	b = append(b, `,"savings_usd":`...)
	return AppendUSD(b, t.ListCostMicros-t.CostMicros)
}

// CSVHeader is the first row of the CSV report.
var CSVHeader = []string{"period", "team", "key", "requests", "failed", "images", "prompt_tokens",
	"completion_tokens", "image_tokens", "cost_usd", "list_cost_usd", "savings_usd"}

// CSV renders the report for finance: one row per team, key and day with
// usage (period is the day), sorted by day, team and key; for period=total,
// one row per team and key with period "total". Money is exact decimal
// USD.
// CSVSizesHeader is the first line of SizesCSV.
var CSVSizesHeader = []string{"period", "team", "model", "size", "requests", "failed", "images", "prompt_tokens",
	"completion_tokens", "image_tokens", "cost_usd", "list_cost_usd", "savings_usd"}

// SizesCSV is the report as CSV with one row per team, model and image
// size for the report's period (or range): what each size cost each team.
func (r *Report) SizesCSV() []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(CSVSizesHeader)
	for _, t := range r.Teams { // teams, and their sizes, are sorted
		for _, n := range t.Sizes {
			model, size := SplitSizeKey(n.Name)
			x := n.Totals
			w.Write([]string{csvText(r.Period), csvText(t.Name), csvText(model), csvText(size), itoa(x.Requests),
				itoa(x.Failed), itoa(x.Images), itoa(x.PromptTokens), itoa(x.CompletionTokens), itoa(x.ImageTokens),
				FormatUSD(x.CostMicros), FormatUSD(x.ListCostMicros), FormatUSD(x.ListCostMicros - x.CostMicros)})
		}
	}
	w.Flush()
	return buf.Bytes()
}

// CSV renders the report as CSV (CSVHeader): one row per key and day with
// usage, or per key for the total period, sorted by day, team and key; text
// cells are escaped against spreadsheet formula injection.
func (r *Report) CSV() []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(CSVHeader)
	type row struct {
		day, team, key string
		t              Totals
	}
	var rows []row
	for _, t := range r.Teams {
		for _, k := range t.Keys {
			if r.Period == PeriodTotal {
				rows = append(rows, row{PeriodTotal, t.Name, k.Name, k.Totals})
				continue
			}
			for _, d := range k.Days {
				if !d.Totals.Zero() {
					rows = append(rows, row{d.Day, t.Name, k.Name, d.Totals})
				}
			}
		}
	}
	slices.SortStableFunc(rows, func(a, b row) int {
		switch {
		case a.day != b.day:
			return cmp.Compare(a.day, b.day)
		case a.team != b.team:
			return cmp.Compare(a.team, b.team)
		default:
			return cmp.Compare(a.key, b.key)
		}
	})
	for _, x := range rows {
		t := x.t
		w.Write([]string{csvText(x.day), csvText(x.team), csvText(x.key), itoa(t.Requests), itoa(t.Failed), itoa(t.Images),
			itoa(t.PromptTokens), itoa(t.CompletionTokens), itoa(t.ImageTokens), FormatUSD(t.CostMicros),
			FormatUSD(t.ListCostMicros), FormatUSD(t.ListCostMicros - t.CostMicros)})
	}
	w.Flush()
	return buf.Bytes()
}

// csvText defuses a text cell that a spreadsheet would run as a formula
// (OWASP's CSV injection guidance): one that starts with = + - @, a tab or a
// carriage return gets a leading '. Team and key names come from whoever
// writes the config, and "=HYPERLINK(...)" must stay text. Numeric cells are
// the gateway's own numbers (a negative savings stays a number) and are left
// as they are.
func csvText(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
