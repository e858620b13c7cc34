package openai

import (
	"fmt"
	"testing"
	"time"

	"nanogate/auth"
	"nanogate/gateway"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

func TestErrorForMapsEveryJourneyError(t *testing.T) {
	limited := &gateway.Call{Caller: &auth.Caller{Name: "ci", Team: "design"},
		Limit: &ratelimit.Result{Refused: ratelimit.RefusedTeamTPM, RetryAfter: 1500 * time.Millisecond}}
	tests := []struct {
		err     error
		call    *gateway.Call
		status  int
		code    string
		noRetry bool
	}{
		{&provider.RequestError{Param: "n", Msg: "bad"}, nil, 400, "invalid_request", false},
		{&gateway.ContentPolicyError{Reason: "no image"}, nil, 400, "content_policy_violation", false},
		{gateway.ErrUnknownModel, nil, 404, "model_not_found", false},
		{gateway.ErrModelNotAllowed, nil, 403, "model_not_allowed", false},
		{fmt.Errorf("wrapped: %w", gateway.ErrBudgetExceeded), nil, 429, "insufficient_quota", true},
		{gateway.ErrRateLimited, limited, 429, "rate_limit_exceeded", false},
		{gateway.ErrLimiterUnavailable, nil, 503, "limiter_unavailable", false},
		{gateway.ErrAccountingUnavailable, nil, 503, "limiter_unavailable", false},
		{router.ErrNoProvider, nil, 503, "no_provider_available", true},
		{&provider.Error{Provider: "p", Kind: provider.KindClient, Status: 422, Message: "no"}, nil, 422, "invalid_request", false},
		{&provider.Error{Provider: "p", Kind: provider.KindTimeout, Message: "slow"}, nil, 504, "upstream_timeout", true},
		{&provider.Error{Provider: "p", Kind: provider.KindServer, Status: 500, Message: "boom"}, nil, 502, "upstream_error", true},
		{fmt.Errorf("surprise"), nil, 500, "internal_error", false},
		{provider.ErrFetchBusy, nil, 503, "image_fetch_busy", false},
		{&provider.Error{Kind: provider.KindClient, Status: 413, Code: "request_too_large", Param: "messages[0].content[1].image_url.url"}, nil, 413, "request_too_large", false},
	}
	for _, tt := range tests {
		e := ErrorFor(tt.err, "m", tt.call)
		if e.Status != tt.status || e.Code != tt.code || e.NoRetry != tt.noRetry {
			t.Errorf("%v -> %d %s noRetry=%v, want %d %s %v", tt.err, e.Status, e.Code, e.NoRetry, tt.status, tt.code, tt.noRetry)
		}
	}
	if e := ErrorFor(provider.ErrFetchBusy, "m", nil); e.RetryAfter <= 0 {
		t.Errorf("image_fetch_busy without retry-after: %+v", e)
	}
	e := ErrorFor(gateway.ErrRateLimited, "m", limited)
	if e.RetryAfter != 1500*time.Millisecond || e.Type != "tokens" || e.Message != "Rate limit reached for team design on tokens per minute (TPM). Please try again in 1.5s." {
		t.Errorf("rate limit error %+v", e)
	}
}
