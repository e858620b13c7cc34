package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/internal/clip"
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
	if err != nil {
		s.usageError(ctx, err)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
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
