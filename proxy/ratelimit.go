package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/auth"
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

var limitWords = map[string][2]string{
	ratelimit.RefusedKeyRPM:  {"key", "requests per minute (RPM)"},
	ratelimit.RefusedKeyTPM:  {"key", "tokens per minute (TPM)"},
	ratelimit.RefusedTeamRPM: {"team", "requests per minute (RPM)"},
	ratelimit.RefusedTeamTPM: {"team", "tokens per minute (TPM)"},
}

// rateLimitError is the 429 of a refused decision, naming the limit.
func rateLimitError(r *ratelimit.Result, c *auth.Caller) *apiError {
	w := limitWords[r.Refused]
	who := "key " + c.Name
	if w[0] == "team" {
		who = "team " + c.Team
	}
	typ := "requests"
	if r.Refused == ratelimit.RefusedKeyTPM || r.Refused == ratelimit.RefusedTeamTPM {
		typ = "tokens"
	}
	e := &apiError{Status: fasthttp.StatusTooManyRequests, Type: typ, Code: "rate_limit_exceeded", RetryAfter: r.RetryAfter}
	if r.RetryAfter <= 0 {
		// Larger than the bucket: waiting never helps.
		e.NoRetry = true
		e.Message = "Request too large for the " + w[1] + " limit of " + who + ": it can never fit. Send fewer images or tokens."
		return e
	}
	e.Message = "Rate limit reached for " + who + " on " + w[1] + ". Please try again in " +
		r.RetryAfter.Round(time.Millisecond).String() + "."
	return e
}
