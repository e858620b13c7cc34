package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"nanogate/auth"
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
	var buf [32]byte
	if r.LimitRequests > 0 {
		h.SetCanonical(hLimitRequests, strconv.AppendInt(buf[:0], r.LimitRequests, 10))
		h.SetCanonical(hRemainingRequests, strconv.AppendInt(buf[:0], max(r.RemainingRequests, 0), 10))
		h.SetCanonical(hResetRequests, ratelimit.AppendReset(buf[:0], r.ResetRequests))
	}
	if r.LimitTokens > 0 {
		h.SetCanonical(hLimitTokens, strconv.AppendInt(buf[:0], r.LimitTokens, 10))
		h.SetCanonical(hRemainingTokens, strconv.AppendInt(buf[:0], max(r.RemainingTokens, 0), 10))
		h.SetCanonical(hResetTokens, ratelimit.AppendReset(buf[:0], r.ResetTokens))
	}
}

// limitHeadersIfMissing gives an answer to caller that has no x-ratelimit-*
// headers those of the caller's limits as they stand, charging nothing.
func limitHeadersIfMissing(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	h := &ctx.Response.Header
	if st.Gateway == nil || h.PeekBytes(hLimitRequests) != nil || h.PeekBytes(hLimitTokens) != nil {
		return
	}
	if res, ok := st.Gateway.PeekLimits(ctx, caller); ok {
		setLimitHeaders(ctx, &res)
	}
}

// The x-ratelimit-* names as fasthttp writes them (normalized), set on every
// answer without normalizing them again.
var (
	hLimitRequests     = []byte("X-Ratelimit-Limit-Requests")
	hRemainingRequests = []byte("X-Ratelimit-Remaining-Requests")
	hResetRequests     = []byte("X-Ratelimit-Reset-Requests")
	hLimitTokens       = []byte("X-Ratelimit-Limit-Tokens")
	hRemainingTokens   = []byte("X-Ratelimit-Remaining-Tokens")
	hResetTokens       = []byte("X-Ratelimit-Reset-Tokens")
)
