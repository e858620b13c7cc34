package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/config"
	"nanogate/internal/clip"
	"nanogate/keys"
)

// The admin API of teams and keys: JSON in, JSON out, lists in OpenAI's
// list envelope, every change audited by the keys package.

// maxAdminBody bounds a team or key body: a few fields, never megabytes.
const maxAdminBody = 64 << 10

var (
	errNoDirectory = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: "Keys and teams cannot be managed at run time on this gateway."}
	errRevokedKey = &apiError{Status: fasthttp.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "This API key was revoked."}
)

// errExpiredKey says when the key stopped working.
func errExpiredKey(at time.Time) *apiError {
	return &apiError{Status: fasthttp.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "This API key expired at " + at.UTC().Format(time.RFC3339) + "."}
}

// adminActor names who makes a change in the audit trail: the admin key's
// id (the start of its SHA-256, which names it without revealing it), or
// the dashboard, which says so in x-nanogate-actor.
func adminActor(ctx *fasthttp.RequestCtx, st *State) string {
	if string(ctx.Request.Header.Peek("x-nanogate-actor")) == "dashboard" {
		return "dashboard"
	}
	h := sha256.Sum256([]byte(st.Config.AdminKey))
	return "admin:" + hex.EncodeToString(h[:6])
}

// adminOp is what an admin operation on the directory gets: the request
// body and who makes the change.
type adminOp struct {
	c     context.Context
	d     *keys.Directory
	body  []byte
	actor string
}

// directoryCall runs fn with a bounded context and the request's body
// (bounded too) when the gateway has a directory, and answers what fn
// returns.
func (s *Server) directoryCall(ctx *fasthttp.RequestCtx, r routed, fn func(op adminOp) (any, int, error)) {
	d := r.st.Directory
	if d == nil {
		writeError(ctx, errNoDirectory)
		return
	}
	body := ctx.PostBody()
	if len(body) > maxAdminBody {
		writeError(ctx, errTooLarge)
		return
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, status, err := fn(adminOp{c: c, d: d, body: body, actor: adminActor(ctx, r.st)})
	if err != nil {
		writeError(ctx, s.keysError(err, r.rid))
		return
	}
	ctx.SetStatusCode(status)
	writeJSON(ctx, v)
}

// list is OpenAI's list envelope.
type list[T any] struct {
	Object string `json:"object"`
	Data   []T    `json:"data"`
}

func newList[T any](data []T) list[T] {
	if data == nil {
		data = []T{}
	}
	return list[T]{Object: "list", Data: data}
}

// keysError is what the client sees of a refused admin operation.
func (s *Server) keysError(err error, rid string) *apiError {
	if fe, ok := keys.IsFieldError(err); ok {
		msg := "Invalid request body: " + fe.Msg + "."
		if fe.Field != "" {
			msg = "Invalid field '" + clip.String(fe.Field) + "': " + fe.Msg + "."
			if fe.Msg == "unknown field" {
				msg = "Unknown field '" + clip.String(fe.Field) + "'."
			}
		}
		return errInvalid(clip.String(fe.Field), msg)
	}
	conflict := func(code string) *apiError {
		return &apiError{Status: fasthttp.StatusConflict, Type: "invalid_request_error", Code: code, Message: clip.To(err.Error(), maxMessage)}
	}
	switch {
	case errors.Is(err, keys.ErrNotFound):
		return &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Message: clip.To(err.Error(), maxMessage)}
	case errors.Is(err, keys.ErrExists):
		return conflict("already_exists")
	case errors.Is(err, keys.ErrFromConfig):
		return conflict("managed_by_config")
	case errors.Is(err, keys.ErrInUse):
		return conflict("team_in_use")
	case errors.Is(err, keys.ErrRevoked):
		return conflict("key_revoked")
	}
	s.log.Error("keys: store failed", zap.String("request_id", rid), zap.Error(err))
	return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "store_unavailable",
		Message: "The key store is unavailable; nothing was changed. Retry shortly."}
}

// handleAdminTeams answers GET and POST /admin/teams.
func (s *Server) handleAdminTeams(ctx *fasthttp.RequestCtx, r routed) {
	s.directoryCall(ctx, r, func(op adminOp) (any, int, error) {
		if ctx.IsGet() || ctx.IsHead() {
			return newList(op.d.Teams(op.c)), fasthttp.StatusOK, nil
		}
		t, err := op.d.CreateTeam(op.c, op.actor, op.body)
		return t, fasthttp.StatusCreated, err
	})
}

// handleAdminTeam answers GET, PATCH and DELETE /admin/teams/{name}.
func (s *Server) handleAdminTeam(ctx *fasthttp.RequestCtx, r routed) {
	s.directoryCall(ctx, r, func(op adminOp) (any, int, error) {
		switch {
		case ctx.IsPatch():
			t, err := op.d.UpdateTeam(op.c, op.actor, r.id, op.body)
			return t, fasthttp.StatusOK, err
		case ctx.IsDelete():
			force := string(ctx.QueryArgs().Peek("force"))
			t, err := op.d.DeleteTeam(op.c, op.actor, r.id, force == "true" || force == "1")
			return map[string]any{"object": "team", "name": t.Name, "deleted": true}, fasthttp.StatusOK, err
		}
		t, err := op.d.Team(op.c, r.id)
		return t, fasthttp.StatusOK, err
	})
}

// createdKey is a key as its creation or rotation answers it: the only
// time its secret is shown.
type createdKey struct {
	keys.KeyInfo
	Key string `json:"key"`
}

// handleAdminKeys answers GET and POST /admin/keys.
func (s *Server) handleAdminKeys(ctx *fasthttp.RequestCtx, r routed) {
	s.directoryCall(ctx, r, func(op adminOp) (any, int, error) {
		if ctx.IsGet() || ctx.IsHead() {
			all, err := op.d.Keys(op.c)
			return newList(all), fasthttp.StatusOK, err
		}
		k, secret, err := op.d.CreateKey(op.c, op.actor, op.body)
		return createdKey{k, secret}, fasthttp.StatusCreated, err
	})
}

// handleAdminKey answers GET, PATCH and DELETE (revoke) /admin/keys/{id}.
func (s *Server) handleAdminKey(ctx *fasthttp.RequestCtx, r routed) {
	s.directoryCall(ctx, r, func(op adminOp) (any, int, error) {
		var (
			k   keys.KeyInfo
			err error
		)
		switch {
		case ctx.IsPatch():
			k, err = op.d.UpdateKey(op.c, op.actor, r.id, op.body)
		case ctx.IsDelete():
			k, err = op.d.RevokeKey(op.c, op.actor, r.id)
		default:
			k, err = op.d.Key(op.c, r.id)
		}
		return k, fasthttp.StatusOK, err
	})
}

// handleAdminKeyRotate answers POST /admin/keys/{id}/rotate.
func (s *Server) handleAdminKeyRotate(ctx *fasthttp.RequestCtx, r routed) {
	s.directoryCall(ctx, r, func(op adminOp) (any, int, error) {
		k, secret, err := op.d.RotateKey(op.c, op.actor, r.id, op.body)
		return createdKey{k, secret}, fasthttp.StatusOK, err
	})
}

// handleAdminAudit answers GET /admin/audit?limit=N (default 100, at most
// 1000), newest first.
func (s *Server) handleAdminAudit(ctx *fasthttp.RequestCtx, r routed) {
	limit := 100
	if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > 1000 {
			writeError(ctx, errInvalid("limit", "limit must be an integer from 1 to 1000."))
			return
		}
		limit = n
	}
	s.directoryCall(ctx, r, func(op adminOp) (any, int, error) {
		evs, err := op.d.Audit(op.c, limit)
		return newList(evs), fasthttp.StatusOK, err
	})
}

// checkKey refuses a revoked or expired key, saying which, and notes the
// use of the others. Only keys that can expire or whose use is tracked
// read the clock.
func checkKey(c *auth.Caller) *apiError {
	if c.Revoked {
		return errRevokedKey
	}
	if c.Seen == nil && c.Expires.IsZero() {
		return nil
	}
	now := time.Now()
	if c.Expired(now) {
		return errExpiredKey(c.Expires)
	}
	c.MarkSeen(now)
	return nil
}

// keyBudget refuses a key whose own budget is spent for its period: its
// spend in the usage records of its team. It guards what starts spending
// later (a batch, each of its lines); a request that spends at once
// reserves its estimate against the key's budget in the gateway instead.
func keyBudget(st *State, c *auth.Caller) *apiError {
	if c.Budget == nil || st.Accounting == nil || st.Accounting.Store == nil {
		return nil
	}
	now := time.Now()
	period := accounting.BudgetPeriod(c.Budget.Period, now)
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bs, err := st.Accounting.Store.Read(cctx, c.Team, []string{period})
	if err != nil || len(bs) == 0 {
		if st.Accounting.FailOpen {
			return nil
		}
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "limiter_unavailable",
			Message: "The gateway cannot check limits or budgets right now."}
	}
	var spent int64
	if t := bs[0].Keys[c.Name]; t != nil {
		spent = t.CostMicros
	}
	budget := int64(math.Round(min(c.Budget.USD, config.MaxBudgetUSD) * 1e6))
	if spent < budget {
		return nil
	}
	msg := "This API key's budget of $" + accounting.FormatUSD(budget) + " for " + period +
		" is spent; requests are refused until the period rolls over (UTC)."
	if c.Budget.Period == "total" {
		msg = "This API key's budget of $" + accounting.FormatUSD(budget) + " is spent."
	}
	return &apiError{Status: fasthttp.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
		NoRetry: true, Message: msg}
}
