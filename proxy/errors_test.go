package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestShouldRetryOnlyWhereARetryCanHelp: a client error (other than a 408 or
// a 429) and an answer marked NoRetry carry x-should-retry: false, so that
// the SDKs do not buy another image; rate limits, timeouts and server
// errors leave the SDK to retry.
func TestShouldRetryOnlyWhereARetryCanHelp(t *testing.T) {
	for _, c := range []struct {
		status  int
		noRetry bool
		want    string
	}{
		{400, false, "false"}, {401, false, "false"}, {403, false, "false"}, {404, false, "false"},
		{405, false, "false"}, {409, false, "false"}, {413, false, "false"}, {415, false, "false"},
		{408, false, ""}, {429, false, ""}, {500, false, ""}, {502, false, ""}, {503, false, ""},
		{429, true, "false"}, {502, true, "false"},
	} {
		var ctx fasthttp.RequestCtx
		writeError(&ctx, &apiError{Status: c.status, Type: "t", Message: "m", NoRetry: c.noRetry})
		if got := string(ctx.Response.Header.Peek("x-should-retry")); got != c.want {
			t.Errorf("%d (NoRetry %v): x-should-retry %q, want %q", c.status, c.noRetry, got, c.want)
		}
	}
}
