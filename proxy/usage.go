package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/internal/clip"
	"nanogate/internal/safemath"
	"nanogate/keys"
)

var errNoAccounting = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
	Message: "Usage tracking is not configured."}

// handleUsage answers GET /v1/usage: the caller's key and team for the
// team's current budget period.
func (s *Server) handleUsage(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	if st.Accounting == nil {
		writeError(ctx, errNoAccounting)
		return
	}
	q := accounting.KeyQuery{Key: caller.Name, Team: caller.Team, Now: time.Now()}
	if t := st.Accounting.Teams[caller.Team]; t != nil {
		q.Budget = t.Budget
	}
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := accounting.KeyUsage(c, st.Accounting.Store, q)
	if err == nil {
		b, err = withBudgets(c, st, caller, q, b)
	}
	if err != nil {
		s.usageError(ctx, err)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// withBudgets adds to a /v1/usage answer what the key's own budget and the
// alerts say: the key's budget in its own period (which may differ from
// the team's), and for the team's budget and the key's the
// alert_thresholds watched and alert_thresholds_reached, those whose alert
// fired in the period (or fires at the next check).
func withBudgets(c context.Context, st *State, caller *auth.Caller, q accounting.KeyQuery, b []byte) ([]byte, error) {
	var teamAlerts, keyAlerts []int
	if st.Directory != nil {
		teamAlerts, keyAlerts = st.Directory.Thresholds(caller.Team, caller.ID)
	}
	if caller.Budget == nil && teamAlerts == nil {
		return b, nil
	}
	var u struct {
		Period json.RawMessage `json:"period"`
		Key    json.RawMessage `json:"key"`
		Team   json.RawMessage `json:"team"`
	}
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, err
	}
	var team struct {
		Spent *float64 `json:"budget_spent_usd"`
	}
	if teamAlerts != nil && q.Budget != nil && json.Unmarshal(u.Team, &team) == nil && team.Spent != nil {
		spent := int64(math.Round(*team.Spent * 1e6))
		u.Team = appendFields(u.Team, thresholds(nil, teamAlerts, spent, q.Budget.USD))
	}
	if kb := caller.Budget; kb != nil {
		kind := kb.Period
		if kind == "" {
			kind = "monthly"
		}
		period := accounting.BudgetPeriod(kind, q.Now)
		bs, err := st.Accounting.Store.Read(c, caller.Team, []string{period})
		if err != nil || len(bs) == 0 {
			return nil, fmt.Errorf("usage of key %q in %s: %w", caller.Name, period, err)
		}
		var spent int64
		if t := bs[0].Keys[caller.Name]; t != nil {
			spent = t.CostMicros
		}
		reserved, err := st.Accounting.Store.Reserved(c, caller.Team, caller.Name)
		if err != nil {
			return nil, fmt.Errorf("requests in flight of key %q: %w", caller.Name, err)
		}
		budget := keys.BudgetMicros(kb.USD)
		f := []byte(`"budget_usd":`)
		f = accounting.AppendUSD(f, budget)
		f = append(f, `,"budget_period":`...)
		f = strconv.AppendQuote(f, kind)
		f = append(f, `,"budget_current_period":`...)
		f = strconv.AppendQuote(f, period)
		f = append(f, `,"budget_spent_usd":`...)
		f = accounting.AppendUSD(f, spent)
		f = append(f, `,"reserved_usd":`...)
		f = accounting.AppendUSD(f, reserved)
		f = append(f, `,"remaining_usd":`...)
		f = accounting.AppendUSD(f, max(safemath.Sub(budget, safemath.Add(spent, reserved)), 0))
		if end := accounting.PeriodEnd(kind, q.Now); !end.IsZero() {
			f = append(f, `,"budget_resets_at":`...)
			f = strconv.AppendQuote(f, end.UTC().Format(time.RFC3339))
		}
		if keyAlerts != nil {
			f = thresholds(append(f, ','), keyAlerts, spent, kb.USD)
		}
		u.Key = appendFields(u.Key, f)
	}
	out := append([]byte(`{"period":`), u.Period...)
	out = append(append(out, `,"key":`...), u.Key...)
	out = append(append(out, `,"team":`...), u.Team...)
	return append(out, '}'), nil
}

// thresholds appends "alert_thresholds" and "alert_thresholds_reached".
func thresholds(b []byte, alerts []int, spent int64, usd float64) []byte {
	b = append(b, `"alert_thresholds":`...)
	b = appendInts(b, alerts)
	b = append(b, `,"alert_thresholds_reached":`...)
	return appendInts(b, keys.Reached(alerts, spent, usd))
}

func appendInts(b []byte, v []int) []byte {
	b = append(b, '[')
	for i, n := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(n), 10)
	}
	return append(b, ']')
}

// appendFields adds fields (a JSON member list) at the end of obj, a JSON
// object with members already.
func appendFields(obj, fields []byte) []byte {
	obj = bytes.TrimRight(obj, " \n")
	out := append(slices.Clone(obj[:len(obj)-1]), ',')
	out = append(out, fields...)
	return append(out, '}')
}

// handleAdminUsage answers GET /admin/usage: every team with its keys, for a
// period or a range of days, as JSON or CSV.
func (s *Server) handleAdminUsage(ctx *fasthttp.RequestCtx, st *State) {
	if st.Accounting == nil {
		writeError(ctx, errNoAccounting)
		return
	}
	args := ctx.QueryArgs()
	q, err := accounting.ParseAdminQuery(string(args.Peek("team")), string(args.Peek("period")),
		string(args.Peek("from")), string(args.Peek("to")), time.Now())
	if err != nil {
		if errors.Is(err, accounting.ErrBadQuery) {
			writeError(ctx, errInvalid("", clip.String(err.Error())))
			return
		}
		s.usageError(ctx, err)
		return
	}
	for _, t := range st.Config.Teams {
		q.Teams = append(q.Teams, accounting.TeamInfo{Name: t.Name, Budget: t.Budget})
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := accounting.Admin(c, st.Accounting.Store, q)
	if err != nil {
		s.usageError(ctx, err)
		return
	}
	by := string(args.Peek("by"))
	if by != "" && by != "key" && by != "size" {
		writeError(ctx, errInvalid("by", "by must be key (the default) or size."))
		return
	}
	switch string(args.Peek("format")) {
	case "csv":
		b := rep.CSV()
		if by == "size" {
			b = rep.SizesCSV()
		}
		ctx.SetContentType("text/csv; charset=utf-8")
		ctx.Response.Header.Set("Content-Disposition", `attachment; filename="nanogate-usage.csv"`)
		ctx.SetBody(b)
	case "", "json":
		b := rep.JSON()
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	default:
		writeError(ctx, errInvalid("format", "format must be json or csv."))
	}
}

func (s *Server) usageError(ctx *fasthttp.RequestCtx, err error) {
	s.log.Error("usage query failed", zap.Error(err))
	writeError(ctx, &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "usage_unavailable",
		Message: "Usage totals cannot be read right now."})
}
