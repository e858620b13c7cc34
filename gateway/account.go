package gateway

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/config"
	"nanogate/internal/safemath"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// ErrBudgetExceeded: the caller's team spent its budget for the period.
var ErrBudgetExceeded = accounting.ErrBudgetExceeded

// ErrAccountingUnavailable: the budget could not be checked (Redis down with
// on_outage: closed).
var ErrAccountingUnavailable = errors.New("budget check unavailable")

// Accounting is what the gateway needs to bill requests and hold budgets.
type Accounting struct {
	Store    accounting.Store
	Recorder *accounting.Recorder
	Pricer   *accounting.Pricer
	// Teams by name, for their budgets.
	Teams map[string]*config.Team
	// FailOpen admits requests when the budget store is unreachable
	// (redis.on_outage: open).
	FailOpen bool
}

// Call is the state of one request's journey between its admission and its
// record.
type Call struct {
	// ID is a server-made unique id: records are counted once per id, so
	// it is never the client's x-request-id.
	ID     string
	Caller *auth.Caller
	Req    *provider.ChatRequest
	// Batch marks a line of a batch (package batch): the rate limiter also
	// checks and charges the batch-only buckets holding BatchShare
	// (batch.max_share) of each limit, so that interactive traffic keeps
	// the rest.
	Batch      bool
	BatchShare float64
	resv       *accounting.Reservation
	// admitted: past the model check and the budget; Finish records it.
	admitted bool
	// Limit is the rate-limit decision, for the x-ratelimit-* headers; nil
	// when no limiter ran.
	Limit    *ratelimit.Result
	limitReq ratelimit.Request
	tokens   int64 // estimate charged to the TPM buckets
	charged  bool
	// images asked for by an Images API request (each its own upstream
	// call); 0 for chat, where the request's n counts.
	images int
	// Warning is a Warning header for the answer (a model id Google
	// retired), "" for none.
	Warning string
	// billed, when set, is the usage this call's own record bills in place
	// of the answer's: with n > 1 fanned out, the answer sums every upstream
	// call and each of the others has a record of its own.
	billed *Usage
}

// wanted is how many images the call asks for, for estimates.
func (c *Call) wanted() int64 {
	if c.images > 0 {
		return int64(c.images)
	}
	return int64(max(c.Req.N, 1))
}

// defaultInputImageTokens is what one input image counts in a prompt for a
// model the catalogue does not know (Gemini 2.5's 258).
const defaultInputImageTokens = 258

// estimateTokens guesses a request's prompt tokens from its size: about four
// bytes of text per token, and per input image the catalogue's count for
// the model (258 when it does not know it).
func (g *Gateway) estimateTokens(req *provider.ChatRequest) int64 {
	var text int64
	for i := range req.Messages {
		for _, p := range req.Messages[i].Parts {
			text = safemath.Add(text, int64(len(p.Text)))
		}
	}
	perImage := int64(defaultInputImageTokens)
	if m := g.model(req.Model); m != nil && m.InputTokensPerImage > 0 {
		perImage = m.InputTokensPerImage
	}
	return safemath.Add(text/4, safemath.Mul(perImage, int64(max(req.ImageInputs, 0))))
}

// textAllowance is the text output a request may produce besides its images:
// max_tokens, which parsing bounds by the model's output limit (bounded here
// again, as this feeds limits and money), or a typical caption's 256.
func textAllowance(req *provider.ChatRequest) int64 {
	if req.MaxTokens > 0 {
		return min(req.MaxTokens, provider.MaxOutputTokens)
	}
	return 256
}

// estimateCall is the tokens a call is charged up front: its prompt, and per
// image asked its image tokens and text allowance. Saturating: a request
// that would pass int64 is charged the most there is, and refused.
func (g *Gateway) estimateCall(call *Call) int64 {
	n := call.wanted()
	perImage := safemath.Add(g.imageTokens(call.Req), textAllowance(call.Req))
	return safemath.Add(g.estimateTokens(call.Req), safemath.Mul(n, perImage))
}

// reserve sets the estimated cost aside in the caller's team budget.
func (g *Gateway) reserve(ctx context.Context, call *Call) error {
	a := g.acct
	if a == nil || call.Caller == nil || call.Caller.Team == "" {
		return nil
	}
	team := a.Teams[call.Caller.Team]
	if team == nil || team.Budget == nil {
		return nil
	}
	n := call.wanted()
	est := a.Pricer.Estimate(call.Req.Model, g.imageSize(call.Req), n, g.estimateTokens(call.Req), safemath.Mul(n, textAllowance(call.Req)))
	r, err := a.Store.Reserve(ctx, team.Name, *team.Budget, call.ID, est)
	switch {
	case err == nil:
		call.resv = &r
		return nil
	case errors.Is(err, accounting.ErrBudgetExceeded):
		return err
	case a.FailOpen:
		g.warnOnce(&g.budgetDown, "budget store unreachable: admitting without budget checks", err)
		return nil
	}
	return ErrAccountingUnavailable
}

// warnOnce logs a degraded state once until it clears.
func (g *Gateway) warnOnce(flag *atomic.Bool, msg string, err error) {
	if flag.CompareAndSwap(false, true) {
		g.log.Warn(msg, zap.Error(err))
		time.AfterFunc(time.Minute, func() { flag.Store(false) })
	}
}

// release drops the reservation of a call that ends before routing.
func (g *Gateway) release(call *Call) {
	if call.resv == nil || g.acct == nil {
		return
	}
	r := *call.resv
	call.resv = nil
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g.acct.Store.Release(ctx, r)
}

// Finish records a call that was admitted: billed at the provider that served
// it, or as failed (costing nothing) when none did. It never blocks: the
// record goes to a queue written off the response path, and settles the
// budget reservation of the same id. It returns the record for the log.
func (g *Gateway) Finish(call *Call, served router.Served, u Usage, status int, stream bool) accounting.Record {
	rec := accounting.Record{
		ID: call.ID, Time: time.Now(), Model: call.Req.Model, Size: g.imageSize(call.Req), Provider: served.Provider,
		Attempts: served.Attempts, Status: status, Stream: stream,
	}
	if call.Caller != nil {
		rec.Key, rec.Team = call.Caller.Name, call.Caller.Team
	}
	if call.billed != nil {
		u = *call.billed
	}
	if served.Provider != "" && status == 200 {
		rec.Images, rec.PromptTokens, rec.TextTokens, rec.ImageTokens = u.Images, u.PromptTokens, u.TextTokens, u.ImageTokens
	} else {
		rec.Provider = ""
	}
	g.settleTokens(call, safemath.Sum(rec.PromptTokens, rec.TextTokens, rec.ImageTokens))
	if g.acct == nil {
		return rec
	}
	g.acct.Pricer.Charge(&rec)
	g.acct.Recorder.Record(rec)
	call.resv = nil
	return rec
}
