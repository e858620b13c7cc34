package proxy

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// apiError is a client-facing failure in OpenAI's envelope.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// NoRetry marks answers a client retry cannot fix (x-should-retry: false).
	NoRetry bool
	// RetryAfter is sent as retry-after (seconds, rounded up) and
	// retry-after-ms, which the OpenAI SDKs honour.
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Message }

func errInvalid(param, msg string) *apiError {
	return &apiError{Status: fasthttp.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_request", Param: param, Message: msg}
}

var (
	errMissingKey = &apiError{Status: fasthttp.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."}
	errBadKey = &apiError{Status: fasthttp.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "Incorrect API key provided."}
	errTooLarge = &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
		Message: "The request body is larger than this gateway accepts (server.max_body_bytes)."}
	errNotFound = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: "Unknown path."}
	errMethod = &apiError{Status: fasthttp.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: "Method not allowed on this path."}
	errContentType = &apiError{Status: fasthttp.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "invalid_request",
		Message: "The request body must be JSON (Content-Type: application/json)."}
)

// toAPIError maps an error of the request's journey to what the client sees.
func toAPIError(err error, model string) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var re *provider.RequestError
	if errors.As(err, &re) {
		return errInvalid(re.Param, re.Msg)
	}
	switch {
	case errors.Is(err, gateway.ErrUnknownModel):
		return &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: "The model '" + model + "' does not exist or no provider serves it."}
	case errors.Is(err, gateway.ErrModelNotAllowed):
		return &apiError{Status: fasthttp.StatusForbidden, Type: "invalid_request_error", Code: "model_not_allowed", Param: "model",
			Message: "This API key may not use the model '" + model + "'."}
	case errors.Is(err, gateway.ErrBudgetExceeded):
		return &apiError{Status: fasthttp.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota", NoRetry: true,
			Message: "Your team's budget for this period is spent; requests are refused until the period rolls over (UTC)."}
	case errors.Is(err, gateway.ErrAccountingUnavailable), errors.Is(err, gateway.ErrLimiterUnavailable):
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "limiter_unavailable",
			Message: "The gateway cannot check limits or budgets right now."}
	case errors.Is(err, router.ErrNoProvider):
		return &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "no_provider_available", NoRetry: true,
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
			return &apiError{Status: pe.Status, Type: "invalid_request_error", Code: code, Param: pe.Param,
				Message: pe.Message}
		case provider.KindCanceled:
			return &apiError{Status: 499, Type: "invalid_request_error", Code: "client_closed_request", Message: "The client closed the request."}
		case provider.KindTimeout:
			return &apiError{Status: fasthttp.StatusGatewayTimeout, Type: "server_error", Code: "upstream_timeout", NoRetry: true,
				Message: "The upstream provider timed out: " + pe.Error()}
		}
		return &apiError{Status: fasthttp.StatusBadGateway, Type: "server_error", Code: "upstream_error", NoRetry: true,
			Message: "Every provider tried failed; last: " + pe.Error()}
	}
	return &apiError{Status: fasthttp.StatusInternalServerError, Type: "server_error", Code: "internal_error",
		Message: "Internal error."}
}

// triedMessage prefixes a failover failure with the providers tried.
func triedMessage(e *apiError, tried []string) {
	if len(tried) > 1 && (e.Code == "upstream_error" || e.Code == "upstream_timeout") {
		e.Message = "Tried " + strings.Join(tried, ", ") + ". " + e.Message
	}
}

// writeError writes e in OpenAI's envelope.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	if e.NoRetry {
		ctx.Response.Header.Set("x-should-retry", "false")
	}
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("retry-after", strconv.FormatInt(ratelimit.RetryAfterSeconds(e.RetryAfter), 10))
		ctx.Response.Header.Set("retry-after-ms", strconv.FormatInt(int64((e.RetryAfter+time.Millisecond-1)/time.Millisecond), 10))
	}
	b := make([]byte, 0, 160+len(e.Message))
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
	b = append(b, "}}\n"...)
	ctx.SetBody(b)
}
