// Package openai is the OpenAI wire format as clients speak it: chat
// completions and Images API requests (JSON and multipart), the answers and
// stream chunks, and the error envelope. It turns bytes into the neutral
// request of package provider and the gateway's answers back into bytes;
// what happens in between is package gateway's.
package openai

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"nanogate/accounting"
	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// Error is a failure in OpenAI's error envelope (README: Errors): the HTTP
// server answers it, batch workers write it to error files.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// NoRetry marks answers a client retry cannot fix (x-should-retry: false).
	NoRetry bool
	// RetryAfter is when a retry may succeed (retry-after, retry-after-ms).
	RetryAfter time.Duration
}

// Error returns the message the client sees.
func (e *Error) Error() string { return e.Message }

// Invalid is a 400 about one parameter.
func Invalid(param, msg string) *Error {
	return &Error{Status: 400, Type: "invalid_request_error", Code: "invalid_request", Param: param, Message: msg}
}

// ErrorFor maps an error of a request's journey to its answer. call may be
// nil; with a rate-limit refusal it names the limit.
func ErrorFor(err error, model string, call *gateway.Call) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var cp *gateway.ContentPolicyError
	if errors.As(err, &cp) {
		return &Error{Status: 400, Type: "invalid_request_error", Code: "content_policy_violation", Message: cp.Reason}
	}
	var re *provider.RequestError
	if errors.As(err, &re) {
		return Invalid(re.Param, re.Msg)
	}
	var ov *router.Overloaded
	if errors.As(err, &ov) {
		return overloadError(ov, model)
	}
	var kb *gateway.KeyBudgetError
	if errors.As(err, &kb) {
		msg := "This API key's budget of $" + accounting.FormatUSD(kb.BudgetMicros)
		if kb.Period == accounting.PeriodTotal {
			msg += " is spent or held by requests in flight; requests are refused until those requests end."
		} else {
			msg += " for " + kb.Period + " is spent or held by requests in flight; requests are refused until the period rolls over (UTC) or those requests end."
		}
		return &Error{Status: 429, Type: "insufficient_quota", Code: "insufficient_quota", NoRetry: true, Message: msg}
	}
	switch {
	case errors.Is(err, gateway.ErrRateLimited):
		return rateLimitError(call)
	case errors.Is(err, gateway.ErrUnknownModel):
		return &Error{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: "The model '" + model + "' does not exist or no provider serves it."}
	case errors.Is(err, gateway.ErrModelNotAllowed):
		return &Error{Status: 403, Type: "invalid_request_error", Code: "model_not_allowed", Param: "model",
			Message: "This API key may not use the model '" + model + "'."}
	case errors.Is(err, gateway.ErrBudgetExceeded):
		return &Error{Status: 429, Type: "insufficient_quota", Code: "insufficient_quota", NoRetry: true,
			Message: "Your team's budget for this period is spent or held by requests in flight; requests are refused until the period rolls over (UTC) or those requests end."}
	case errors.Is(err, gateway.ErrAccountingUnavailable), errors.Is(err, gateway.ErrLimiterUnavailable):
		return &Error{Status: 503, Type: "server_error", Code: "limiter_unavailable",
			Message: "The gateway cannot check limits or budgets right now."}
	case errors.Is(err, provider.ErrFetchBusy):
		return &Error{Status: 503, Type: "server_error", Code: "image_fetch_busy", RetryAfter: provider.FetchBusyRetryAfter,
			Message: "The gateway is fetching too many images for other requests right now; retry shortly."}
	case errors.Is(err, router.ErrNoProvider):
		return &Error{Status: 503, Type: "server_error", Code: "no_provider_available", NoRetry: true,
			Message: "No provider is available for the model '" + model + "'."}
	}
	if pe, ok := provider.AsError(err); ok {
		switch pe.Kind {
		case provider.KindClient:
			// The upstream refused the request itself: hand it back as is.
			code := pe.Code
			if code == "" {
				code = "invalid_request"
			}
			return &Error{Status: pe.Status, Type: "invalid_request_error", Code: code, Param: pe.Param, Message: pe.Message}
		case provider.KindCanceled:
			return &Error{Status: 499, Type: "invalid_request_error", Code: "client_closed_request", Message: "The client closed the request."}
		case provider.KindTimeout:
			return &Error{Status: 504, Type: "server_error", Code: "upstream_timeout", NoRetry: true,
				Message: "The upstream provider timed out: " + pe.Error()}
		}
		return &Error{Status: 502, Type: "server_error", Code: "upstream_error", NoRetry: true,
			Message: "Every provider tried failed; last: " + pe.Error()}
	}
	return &Error{Status: 500, Type: "server_error", Code: "internal_error", Message: "Internal error."}
}

// overloadError answers a request no provider took and that a retry may
// fix without buying an image twice: retryable (no x-should-retry: false),
// with the delay the upstreams or the circuits give. 429 while some provider
// of the model is still usable, 503 when every one is out.
func overloadError(ov *router.Overloaded, model string) *Error {
	secs := strconv.FormatInt(ratelimit.RetryAfterSeconds(ov.RetryAfter), 10)
	last := ""
	if ov.Last != nil {
		last = " Last: " + ov.Last.Error()
	}
	if ov.AllOut {
		return &Error{Status: 503, Type: "server_error", Code: "no_provider_available", RetryAfter: ov.RetryAfter,
			Message: "No provider can take a request for the model '" + model + "' right now; retry in " + secs + " s." + last}
	}
	return &Error{Status: 429, Type: "requests", Code: "rate_limit_exceeded", RetryAfter: ov.RetryAfter,
		Message: "The upstream providers are overloaded; retry in " + secs + " s." + last}
}

// Tried prefixes a failover failure with the providers tried.
func (e *Error) Tried(tried []string) {
	if len(tried) > 1 && (e.Code == "upstream_error" || e.Code == "upstream_timeout" ||
		e.Code == "rate_limit_exceeded" || e.Code == "no_provider_available") {
		e.Message = "Tried " + strings.Join(tried, ", ") + ". " + e.Message
	}
}

// AppendBody writes OpenAI's error envelope (no trailing newline).
func (e *Error) AppendBody(b []byte) []byte {
	b = append(b, `{"error":{"message":`...)
	b = jsonx.AppendString(b, e.Message)
	b = append(b, `,"type":`...)
	b = jsonx.AppendString(b, e.Type)
	b = append(b, `,"param":`...)
	if e.Param == "" {
		b = append(b, "null"...)
	} else {
		b = jsonx.AppendString(b, e.Param)
	}
	b = append(b, `,"code":`...)
	if e.Code == "" {
		b = append(b, "null"...)
	} else {
		b = jsonx.AppendString(b, e.Code)
	}
	return append(b, "}}"...)
}

var limitWords = map[string][2]string{
	ratelimit.RefusedKeyRPM:       {"key", "requests per minute (RPM)"},
	ratelimit.RefusedKeyTPM:       {"key", "tokens per minute (TPM)"},
	ratelimit.RefusedTeamRPM:      {"team", "requests per minute (RPM)"},
	ratelimit.RefusedTeamTPM:      {"team", "tokens per minute (TPM)"},
	ratelimit.RefusedBatchKeyRPM:  {"key", "batch share (batch.max_share) of requests per minute"},
	ratelimit.RefusedBatchKeyTPM:  {"key", "batch share (batch.max_share) of tokens per minute"},
	ratelimit.RefusedBatchTeamRPM: {"team", "batch share (batch.max_share) of requests per minute"},
	ratelimit.RefusedBatchTeamTPM: {"team", "batch share (batch.max_share) of tokens per minute"},
}

// rateLimitError is the 429 of a refused decision, naming the limit.
func rateLimitError(call *gateway.Call) *Error {
	e := &Error{Status: 429, Type: "requests", Code: "rate_limit_exceeded", Message: "Rate limit reached."}
	if call == nil || call.Limit == nil {
		return e
	}
	r := call.Limit
	w := limitWords[r.Refused]
	who := "this key"
	if call.Caller != nil {
		who = "key " + call.Caller.Name
		if w[0] == "team" {
			who = "team " + call.Caller.Team
		}
	}
	if strings.Contains(w[1], "tokens") {
		e.Type = "tokens"
	}
	e.RetryAfter = r.RetryAfter
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
