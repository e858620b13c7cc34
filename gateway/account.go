package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/config"
	"nanogate/internal/safemath"
	"nanogate/provider"
	"nanogate/ratelimit"
)

// ErrBudgetExceeded: the caller's team spent its budget for the period, or
// the key its own (a KeyBudgetError, which matches it too).
var ErrBudgetExceeded = accounting.ErrBudgetExceeded

// KeyBudgetError refuses a request over its key's own budget: the key's
// spend in the period plus its requests in flight plus the request's
// estimate would pass it.
type KeyBudgetError struct {
	BudgetMicros int64
	Period       string // the period checked ("2026-11", "2026-11-25", "total")
}

// Error says which budget refused, for logs; clients get the OpenAI
// error the openai package makes of it.
func (e *KeyBudgetError) Error() string {
	return "key budget of " + accounting.FormatUSD(e.BudgetMicros) + " USD exceeded for " + e.Period
}

// Unwrap makes the error match accounting.ErrKeyBudgetExceeded and
// ErrBudgetExceeded.
func (e *KeyBudgetError) Unwrap() error { return accounting.ErrKeyBudgetExceeded }

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

	// joint is found once, for the gateway's limiter (jointFor).
	jointOnce sync.Once
	joint     *ratelimit.Redis
	jointFor  ratelimit.Limiter
}

// jointAdmission returns the Redis limiter with which the budget store
// shares its Redis, so that a decision and a reservation can go in one
// pipeline; nil when they do not.
func (g *Gateway) jointAdmission() *ratelimit.Redis {
	a := g.acct
	if a == nil || g.limiter == nil {
		return nil
	}
	a.jointOnce.Do(func() {
		a.jointFor = g.limiter
		lr, ar := ratelimit.RedisOf(g.limiter), accounting.RedisOf(a.Store)
		if lr != nil && ar != nil && sameRedis(lr.Client(), ar.Client()) {
			a.joint = lr
		}
	})
	if a.jointFor != g.limiter {
		return nil // another gateway's limiter: no shortcut
	}
	return a.joint
}

// sameRedis reports whether two clients reach the same Redis (the same
// node and database, or the same cluster).
func sameRedis(x, y redis.UniversalClient) bool {
	switch x := x.(type) {
	case *redis.Client:
		y, ok := y.(*redis.Client)
		return ok && x.Options().Addr == y.Options().Addr && x.Options().DB == y.Options().DB
	case *redis.ClusterClient:
		y, ok := y.(*redis.ClusterClient)
		return ok && slices.Equal(x.Options().Addrs, y.Options().Addrs)
	}
	return false
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
	if m := g.Model(req.Model); m != nil && m.InputTokensPerImage > 0 {
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

// reserve sets the estimated cost aside in the budgets of ask (from
// budgetAsk).
func (g *Gateway) reserve(ctx context.Context, call *Call, ask accounting.Ask) error {
	r, err := g.acct.Store.Reserve(ctx, ask)
	return g.reserved(call, r, err)
}

// budgetAsk is the reservation a call makes when its team or its key has a
// budget; ok is false when neither has one.
func (g *Gateway) budgetAsk(call *Call) (ask accounting.Ask, ok bool) {
	a := g.acct
	c := call.Caller
	if a == nil || c == nil {
		return ask, false
	}
	var tb *config.Budget
	if c.Team != "" {
		if team := a.Teams[c.Team]; team != nil {
			tb = team.Budget
		}
	}
	if tb == nil && c.Budget == nil {
		return ask, false
	}
	return accounting.Ask{ID: call.ID, Team: c.Team, Budget: tb, Key: c.Name, KeyBudget: c.Budget,
		Micros: g.estimateCost(call)}, true
}

// estimateCost is the cost a call reserves, in micro-dollars.
func (g *Gateway) estimateCost(call *Call) int64 {
	n := call.wanted()
	return g.acct.Pricer.Estimate(call.Req.Model, g.imageSize(call.Req), n, g.estimateTokens(call.Req), safemath.Mul(n, textAllowance(call.Req)))
}

// reserved takes the store's answer to a reservation: a refusal is the
// budget's; an unreachable store admits (redis.on_outage open) or refuses.
func (g *Gateway) reserved(call *Call, r accounting.Reservation, err error) error {
	switch {
	case err == nil:
		call.resv = &r
		return nil
	case errors.Is(err, accounting.ErrKeyBudgetExceeded):
		return &KeyBudgetError{BudgetMicros: r.KeyBudgetMicros, Period: r.KeyPeriod}
	case errors.Is(err, accounting.ErrBudgetExceeded):
		return err
	case g.acct.FailOpen:
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
