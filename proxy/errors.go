package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/internal/clip"
	"nanogate/openai"
	"nanogate/ratelimit"
)

// apiError is a client-facing failure in OpenAI's envelope.
type apiError = openai.Error

func errInvalid(param, msg string) *apiError { return openai.Invalid(param, msg) }

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
// The model is the client's string: clipped before it is quoted.
func toAPIError(err error, model string) *apiError {
	return openai.ErrorFor(err, clip.String(model), nil)
}

// triedMessage prefixes a failover failure with the providers tried.
func triedMessage(e *apiError, tried []string) { e.Tried(tried) }

// maxMessage bounds an error message: it quotes at most a few of the
// client's values, each clipped, and this is the backstop for any that was
// not.
const maxMessage = 4 * clip.Max

// clientFault reports whether status is a 4xx that the same request sent
// again cannot fix. The SDKs retry 408, 409 and 429 by default; this gateway
// answers 409 only to a settled conflict (a key name already taken), so only a
// 408 or a 429 may be worth a retry.
func clientFault(status int) bool {
	return status >= 400 && status < 500 && status != fasthttp.StatusRequestTimeout && status != fasthttp.StatusTooManyRequests
}

// writeError writes e in OpenAI's envelope.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	if len(e.Message) > maxMessage || len(e.Param) > clip.Max {
		c := *e
		c.Message, c.Param = clip.To(e.Message, maxMessage), clip.String(e.Param)
		e = &c
	}
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	if e.NoRetry || clientFault(e.Status) {
		ctx.Response.Header.Set("x-should-retry", "false")
	}
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("retry-after", strconv.FormatInt(ratelimit.RetryAfterSeconds(e.RetryAfter), 10))
		ctx.Response.Header.Set("retry-after-ms", strconv.FormatInt(int64((e.RetryAfter+time.Millisecond-1)/time.Millisecond), 10))
	}
	b := e.AppendBody(make([]byte, 0, 160+len(e.Message)))
	b = append(b, '\n')
	ctx.SetBody(b)
}
