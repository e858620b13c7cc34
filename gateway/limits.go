package gateway

import (
	"context"
	"errors"

	"nanogate/internal/safemath"
	"nanogate/ratelimit"
)

// ErrRateLimited: a key or team limit has no room for the request now.
var ErrRateLimited = errors.New("rate limited")

// ErrLimiterUnavailable: Redis is unreachable and redis.on_outage is closed.
var ErrLimiterUnavailable = ratelimit.ErrUnavailable

// limit asks the limiter whether the call may go now, charging its estimated
// tokens to every TPM bucket that applies. The decision stays on the call for
// the response headers.
func (g *Gateway) limit(ctx context.Context, call *Call) error {
	if g.limiter == nil || call.Caller == nil {
		return nil
	}
	call.tokens = g.estimateCall(call)
	call.limitReq = ratelimit.Request{Key: call.Caller.Name, Team: call.Caller.Team, Tokens: call.tokens,
		Limits: ratelimit.Limits{KeyRPM: call.Caller.RPM, KeyTPM: call.Caller.TPM},
		Batch:  call.Batch, Share: call.BatchShare}
	if g.acct != nil {
		if t := g.acct.Teams[call.Caller.Team]; t != nil {
			call.limitReq.Limits.TeamRPM, call.limitReq.Limits.TeamTPM = t.RPM, t.TPM
		}
	}
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
