package batch

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// apiError is a line's failure as the HTTP API would have answered it.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
}

// transient reports whether running the line again later may succeed: the
// gateway's own failover already tried every provider, but an outage often
// passes.
func (e *apiError) transient() bool {
	return e.Status == 502 || e.Status == 503 || e.Status == 504
}

// toAPIError maps an error of a line's journey to what the HTTP API answers
// for it (the same statuses, types and codes as proxy's mapping, SPEC
// section 8), for the line's error file entry.
func toAPIError(err error, model string, call *gateway.Call) *apiError {
	var cp *gateway.ContentPolicyError
	if errors.As(err, &cp) {
		return &apiError{Status: 400, Type: "invalid_request_error", Code: "content_policy_violation", Message: cp.Reason}
	}
	var re *provider.RequestError
	if errors.As(err, &re) {
		return &apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_request", Param: re.Param, Message: re.Msg}
	}
	switch {
	case errors.Is(err, gateway.ErrRateLimited):
		return rateLimitError(call)
	case errors.Is(err, gateway.ErrUnknownModel):
		return &apiError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: "The model '" + model + "' does not exist or no provider serves it."}
	case errors.Is(err, gateway.ErrModelNotAllowed):
		return &apiError{Status: 403, Type: "invalid_request_error", Code: "model_not_allowed", Param: "model",
			Message: "This API key may not use the model '" + model + "'."}
	case errors.Is(err, gateway.ErrBudgetExceeded):
		return &apiError{Status: 429, Type: "insufficient_quota", Code: "insufficient_quota",
			Message: "Your team's budget for this period is spent."}
	case errors.Is(err, gateway.ErrAccountingUnavailable), errors.Is(err, gateway.ErrLimiterUnavailable):
		return &apiError{Status: 503, Type: "server_error", Code: "limiter_unavailable",
			Message: "The gateway cannot check limits or budgets right now."}
	case errors.Is(err, router.ErrNoProvider):
		return &apiError{Status: 503, Type: "server_error", Code: "no_provider_available",
			Message: "No provider is available for the model '" + model + "'."}
	}
	if pe, ok := provider.AsError(err); ok {
		switch pe.Kind {
		case provider.KindClient:
			code := pe.Code
			if code == "" {
				code = "invalid_request"
			}
			return &apiError{Status: pe.Status, Type: "invalid_request_error", Code: code, Param: pe.Param, Message: pe.Message}
		case provider.KindTimeout:
			return &apiError{Status: 504, Type: "server_error", Code: "upstream_timeout",
				Message: "The upstream provider timed out: " + pe.Error()}
		}
		return &apiError{Status: 502, Type: "server_error", Code: "upstream_error",
			Message: "Every provider tried failed; last: " + pe.Error()}
	}
	return &apiError{Status: 500, Type: "server_error", Code: "internal_error", Message: "Internal error."}
}

var limitWords = map[string]string{
	ratelimit.RefusedKeyRPM: "key requests per minute (RPM)", ratelimit.RefusedKeyTPM: "key tokens per minute (TPM)",
	ratelimit.RefusedTeamRPM: "team requests per minute (RPM)", ratelimit.RefusedTeamTPM: "team tokens per minute (TPM)",
	ratelimit.RefusedBatchKeyRPM:  "batch share (batch.max_share) of the key's requests per minute",
	ratelimit.RefusedBatchKeyTPM:  "batch share (batch.max_share) of the key's tokens per minute",
	ratelimit.RefusedBatchTeamRPM: "batch share (batch.max_share) of the team's requests per minute",
	ratelimit.RefusedBatchTeamTPM: "batch share (batch.max_share) of the team's tokens per minute",
}

// rateLimitError is the failure of a line that can never fit a limit (the
// others wait for room and never fail with it).
func rateLimitError(call *gateway.Call) *apiError {
	e := &apiError{Status: 429, Type: "tokens", Code: "rate_limit_exceeded",
		Message: "Rate limit reached."}
	if call != nil && call.Limit != nil {
		e.Message = "Request too large for the " + limitWords[call.Limit.Refused] + " limit: it can never fit. Send fewer images or tokens."
	}
	return e
}

// appendErrorBody writes OpenAI's error envelope.
func appendErrorBody(b []byte, e *apiError) []byte {
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
	b = jsonx.AppendString(b, e.Code)
	return append(b, "}}"...)
}

// appendResultLine writes one line of an output or error file:
// {"id":"batch_req_...","custom_id":...,"response":{"status_code":...,
// "request_id":...,"body":...},"error":null}. body must be compact JSON.
func appendResultLine(b []byte, batchID string, line int, customID []byte, status int, requestID string, body []byte) []byte {
	b = appendLineStart(b, batchID, line, customID)
	b = append(b, `,"response":{"status_code":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"request_id":`...)
	b = jsonx.AppendString(b, requestID)
	b = append(b, `,"body":`...)
	b = append(b, body...)
	return append(b, `},"error":null}`...)
}

// appendLineErrorLine writes an error file line for a line that got no HTTP
// answer at all (the batch expired before it ran): "response" is null and
// "error" says why.
func appendLineErrorLine(b []byte, batchID string, line int, customID []byte, code, message string) []byte {
	b = appendLineStart(b, batchID, line, customID)
	b = append(b, `,"response":null,"error":{"code":`...)
	b = jsonx.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = jsonx.AppendString(b, message)
	return append(b, "}}"...)
}

func appendLineStart(b []byte, batchID string, line int, customID []byte) []byte {
	b = append(b, `{"id":"batch_req_`...)
	b = append(b, suffix(batchID)...)
	b = append(b, '_')
	b = strconv.AppendInt(b, int64(line), 10)
	b = append(b, `","custom_id":`...)
	if len(customID) == 0 {
		customID = []byte("null")
	}
	return append(b, customID...)
}

// compact makes sure a body holds no newline, which would split a JSONL
// line: the renderers write compact JSON, so this is a check, not a copy.
func compact(body []byte) []byte {
	body = bytes.TrimRight(body, "\r\n \t")
	if bytes.IndexByte(body, '\n') < 0 && bytes.IndexByte(body, '\r') < 0 {
		return body
	}
	// Outside strings they are whitespace; inside, JSON has them escaped.
	out := make([]byte, 0, len(body))
	for _, c := range body {
		if c != '\n' && c != '\r' {
			out = append(out, c)
		}
	}
	return out
}

// since is a duration for logs, in milliseconds.
func since(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
