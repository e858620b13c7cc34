package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"nanogate/gateway"
	"nanogate/ratelimit"
)

// setCallHeaders writes what the journey of call has to say in headers: the
// rate limits, and a Warning when the model asked for is one Google retired.
func setCallHeaders(ctx *fasthttp.RequestCtx, call *gateway.Call) {
	setLimitHeaders(ctx, call.Limit)
	if call.Warning != "" {
		ctx.Response.Header.Set("Warning", call.Warning)
	}
}

// setLimitHeaders writes OpenAI's x-ratelimit-* headers for the tightest
// request and token limits of the decision.
func setLimitHeaders(ctx *fasthttp.RequestCtx, r *ratelimit.Result) {
	if r == nil {
		return
	}
	h := &ctx.Response.Header
	if r.LimitRequests > 0 {
		h.Set("x-ratelimit-limit-requests", strconv.FormatInt(r.LimitRequests, 10))
		h.Set("x-ratelimit-remaining-requests", strconv.FormatInt(max(r.RemainingRequests, 0), 10))
		h.Set("x-ratelimit-reset-requests", ratelimit.FormatReset(r.ResetRequests))
	}
	if r.LimitTokens > 0 {
		h.Set("x-ratelimit-limit-tokens", strconv.FormatInt(r.LimitTokens, 10))
		h.Set("x-ratelimit-remaining-tokens", strconv.FormatInt(max(r.RemainingTokens, 0), 10))
		h.Set("x-ratelimit-reset-tokens", ratelimit.FormatReset(r.ResetTokens))
	}
}
