package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"nanogate/ratelimit"
)

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
