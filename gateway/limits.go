package gateway

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/internal/safemath"
	"nanogate/ratelimit"
)

// ErrRateLimited: a key or team limit has no room for the request now.
var ErrRateLimited = errors.New("rate limited")

// ErrLimiterUnavailable: Redis is unreachable and redis.on_outage is closed.
var ErrLimiterUnavailable = ratelimit.ErrUnavailable

// limitAndReserve runs the rate limits, the model check and the budget
// reservation, whose errors take precedence in this order. The limits come
// first so that requests for unknown or forbidden models count against them
// like any other: a refusal is not free. When the limiter and the budget
// store share a Redis, the decision and the reservation go in one pipeline
// (one round trip): the reservation is then made before the decision is
// known, and released when the limiter refuses.
func (g *Gateway) limitAndReserve(ctx context.Context, call *Call) error {
	checkErr := g.Check(call.Caller, call.Req.Model)
	var ask accounting.Ask
	budgeted := false
	if checkErr == nil {
		ask, budgeted = g.budgetAsk(call)
	}
	lim := g.jointAdmission()
	if lim == nil || !budgeted {
		if err := g.limit(ctx, call); err != nil {
			return err
		}
		if checkErr != nil {
			g.settleTokens(call, 0)
			return checkErr
		}
		if !budgeted {
			return nil
		}
		if err := g.reserve(ctx, call, ask); err != nil {
			g.settleTokens(call, 0)
			return err
		}
		return nil
	}
	g.limitRequest(call)
	var d ratelimit.Pending
	j := &reserveJoin{ctx: ctx, st: g.acct.Store, ask: ask}
	lim.Admit(call.limitReq, &d, j)
	res, err := d.Result(ctx)
	r, rerr := j.rc.Result(ctx)
	if err == nil {
		call.Limit = &res
		if !res.Allowed {
			err = ErrRateLimited
		}
	}
	if err != nil {
		if rerr == nil {
			call.resv = &r
			g.release(call)
		}
		return err
	}
	call.charged = true
	if err := g.reserved(call, r, rerr); err != nil {
		g.settleTokens(call, 0)
		return err
	}
	return nil
}

// reserveJoin is a request's budget reservation, sent in the pipeline of its
// admission: the reservations of the admissions one pipeline carries go
// together (accounting.QueueReserves).
type reserveJoin struct {
	ctx context.Context
	st  accounting.Store
	ask accounting.Ask
	rc  accounting.ReserveCall
}

// Join queues the reservations of the reserveJoins among js together, on
// the first one's store (every admission of one limiter has the gateway's),
// and passes the other joiners on.
func (j *reserveJoin) Join(p redis.Pipeliner, js []ratelimit.Joiner) {
	asks := make([]accounting.Ask, 0, len(js))
	calls := make([]*accounting.ReserveCall, 0, len(js))
	for _, x := range js {
		r, ok := x.(*reserveJoin)
		if !ok || r.st != j.st {
			x.Join(p, []ratelimit.Joiner{x})
			continue
		}
		asks, calls = append(asks, r.ask), append(calls, &r.rc)
	}
	accounting.QueueReserves(j.ctx, p, j.st, asks, calls)
}

// limit asks the limiter whether the call may go now, charging its estimated
// tokens to every TPM bucket that applies. The decision stays on the call for
// the response headers.
func (g *Gateway) limit(ctx context.Context, call *Call) error {
	if g.limiter == nil || call.Caller == nil {
		return nil
	}
	g.limitRequest(call)
	res, err := g.limiter.Allow(ctx, call.limitReq)
	if err != nil {
		return err
	}
	call.Limit = &res
	if !res.Allowed {
		return ErrRateLimited
	}
	call.charged = true
	return nil
}

// limitRequest sets the call's question to the limiter and its estimate.
func (g *Gateway) limitRequest(call *Call) {
	call.tokens = g.estimateCall(call)
	call.limitReq = ratelimit.Request{Key: call.Caller.Name, Team: call.Caller.Team, Tokens: call.tokens,
		Limits: g.limitsOf(call.Caller), Batch: call.Batch, Share: call.BatchShare}
}

// limitsOf are the rate limits of c's key and of its team.
func (g *Gateway) limitsOf(c *auth.Caller) ratelimit.Limits {
	l := ratelimit.Limits{KeyRPM: c.RPM, KeyTPM: c.TPM}
	if g.acct != nil {
		if t := g.acct.Teams[c.Team]; t != nil {
			l.TeamRPM, l.TeamTPM = t.RPM, t.TPM
		}
	}
	return l
}

// PeekLimits reads c's rate limits without charging them, for the
// x-ratelimit-* headers of an answer that did not go through admission. ok
// is false when c has no limits or the limiter cannot say (Redis down):
// such an answer then carries none.
func (g *Gateway) PeekLimits(ctx context.Context, c *auth.Caller) (res ratelimit.Result, ok bool) {
	p, isPeeker := g.limiter.(ratelimit.Peeker)
	if !isPeeker || c == nil {
		return res, false
	}
	r := ratelimit.Request{Key: c.Name, Team: c.Team, Limits: g.limitsOf(c)}
	if r.Limits == (ratelimit.Limits{}) {
		return res, false
	}
	res, err := p.Peek(ctx, r)
	return res, err == nil
}

// settleTokens corrects the TPM buckets to what the request really used (a
// refund of the whole estimate when nothing was served), off the response
// path.
func (g *Gateway) settleTokens(call *Call, used int64) {
	if !call.charged || g.limiter == nil {
		return
	}
	call.charged = false
	delta := safemath.Sub(max(used, 0), call.tokens)
	if delta == 0 {
		return
	}
	// The limiter coalesces corrections (ratelimit.Coalescing on Redis), so
	// this does not wait for a round trip.
	g.limiter.Adjust(context.Background(), call.limitReq, delta)
}
