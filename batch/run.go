package batch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"nanogate/auth"
	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/openai"
	"nanogate/provider"
	"nanogate/router"
	"nanogate/telemetry"
)

// checker returns the check of a line's body for endpoint: what the HTTP
// handler would refuse before any upstream call (malformed body, unknown
// parameters, a model the key may not use) fails the batch at creation.
func (m *Manager) checker(rt Runtime, caller *auth.Caller, endpoint string) func([]byte) (string, *LineError) {
	gw := rt.Gateway
	models := gw.DefaultImageModel(rt.Config.ModelsInOrder())
	return func(body []byte) (string, *LineError) {
		var req *provider.ChatRequest
		var err error
		switch endpoint {
		case EndpointChat:
			req, err = openai.ParseChatRequest(body)
			if err == nil && req.Stream {
				return "", &LineError{Code: "invalid_value", Param: "body.stream", Message: "'stream' is not supported in a batch."}
			}
		case EndpointImages:
			var ir *openai.ImagesRequest
			if ir, err = openai.ParseImagesGeneration(body); err == nil {
				if err = ir.Finish(models); err == nil {
					req, err = ir.ChatRequest(gw.Model(ir.Model))
				}
			}
		}
		if err != nil {
			var re *provider.RequestError
			if errors.As(err, &re) {
				param := "body"
				if re.Param != "" {
					param += "." + re.Param
				}
				return "", &LineError{Code: "invalid_request", Param: param, Message: re.Msg}
			}
			return "", &LineError{Code: "invalid_request", Param: "body", Message: err.Error()}
		}
		if err := gw.Check(caller, req.Model); err != nil {
			e := toAPIError(err, req.Model, nil)
			return "", &LineError{Code: e.Code, Param: "body.model", Message: e.Message}
		}
		return req.Model, nil
	}
}

// attempt is what running a line once gave.
type attempt struct {
	// outcome and line, when the line has its outcome: Completed with its
	// output file line, or Failed with its error file line.
	outcome Outcome
	line    []byte
	// wait > 0: the line did not run (no room in a limit, budget spent,
	// Redis down): run it again after wait.
	wait time.Duration
	why  string
	// retry: a failure another attempt may fix (502, 503, 504).
	retry bool
	// overload > 0: no provider could take the line and nothing was made
	// (router.Overloaded): it runs again after this wait, for as long as
	// the batch has time; the batch pauses meanwhile.
	overload time.Duration
	// abandoned: the replica is stopping; the line stays queued.
	abandoned bool

	status    int
	model     string
	served    router.Served
	usage     gateway.Usage
	cost      int64
	errorCode string
	err       error
}

// runLine runs one input line as a live request of the batch's key.
func (m *Manager) runLine(ctx context.Context, rt Runtime, b *Batch, t *Task, raw []byte) attempt {
	// A span per line, named by its batch (which has no span of its own:
	// it outlives any trace).
	ctx, end := telemetry.Span(ctx, "batch line", attribute.String("nanogate.batch_id", b.ID),
		attribute.Int("nanogate.batch_line", t.Line))
	defer end(nil)
	env, lerr := parseEnvelope(bytes.TrimSpace(raw))
	if lerr != nil {
		// Validated at creation: the input file changed under the batch.
		e := &apiError{Status: 400, Type: "invalid_request_error", Code: lerr.Code, Param: lerr.Param,
			Message: "The input line cannot be read any more: " + lerr.Message}
		return m.failed(b, t, env.customID, "", e, nil)
	}
	k, ok := m.key(rt.Config, b.Key)
	if !ok {
		e := &apiError{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key",
			Message: "The key '" + b.Key + "' that created this batch is no longer configured."}
		return m.failed(b, t, env.customID, "", e, nil)
	}
	caller := k.caller
	if rt.Key != nil {
		if live := rt.Key(b.Key); live != nil {
			if live.Revoked || live.Expired(time.Now()) {
				e := &apiError{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key",
					Message: "The key '" + b.Key + "' that created this batch was revoked or has expired."}
				return m.failed(b, t, env.customID, "", e, nil)
			}
			if live.Budget != nil {
				c := *caller
				c.Budget = live.Budget
				caller = &c
			}
		}
	}
	id := callID(b.ID, t.Line, t.try)
	switch b.Endpoint {
	case EndpointImages:
		return m.runImages(ctx, rt, b, t, env, caller, id)
	default:
		return m.runChat(ctx, rt, b, t, env, caller, id)
	}
}

// forceLinks returns caller with image links on unless its key turned them
// off: batch output files stay small, and links outlive the batch for the
// store's ttl.
func forceLinks(c *auth.Caller) *auth.Caller {
	if c.OffloadImages != nil {
		return c
	}
	on := true
	cc := *c
	cc.OffloadImages = &on
	return &cc
}

func (m *Manager) runChat(ctx context.Context, rt Runtime, b *Batch, t *Task, env envelope, caller *auth.Caller, id string) attempt {
	req, err := openai.ParseChatRequest(env.body)
	if err == nil && req.Stream {
		err = &provider.RequestError{Param: "stream", Msg: "'stream' is not supported in a batch."}
	}
	if err != nil {
		return m.failed(b, t, env.customID, id, toAPIError(err, "", nil), err)
	}
	call := &gateway.Call{ID: id, Caller: forceLinks(caller), Req: req, Batch: true, BatchShare: m.share(rt)}
	defer call.Close()
	ans, served, err := rt.Gateway.Chat(ctx, call)
	if err != nil {
		if a, ok := m.waitOf(err, call); ok {
			return a
		}
		if ctx.Err() != nil {
			// The line runs again later under the same id: nothing is
			// recorded under it now.
			call.Abandon()
			return attempt{abandoned: true}
		}
		a := m.failed(b, t, env.customID, id, toAPIError(err, req.Model, call), err)
		a.model, a.served = req.Model, served
		return a
	}
	body := openai.NewChatBody(ans, id, req.Model, rt.Format)
	var buf bytes.Buffer
	buf.Grow(body.Len())
	body.WriteTo(&buf)
	body.Close()
	bill := call.Close()
	line := appendResultLine(make([]byte, 0, buf.Len()+256), b.ID, t.Line, env.customID, 200, id, compact(buf.Bytes()))
	return attempt{outcome: Completed, line: line, status: 200, model: req.Model, served: served, usage: ans.Usage,
		cost: bill.CostMicros}
}

func (m *Manager) runImages(ctx context.Context, rt Runtime, b *Batch, t *Task, env envelope, caller *auth.Caller, id string) attempt {
	ir, err := openai.ParseImagesGeneration(env.body)
	if err == nil {
		err = ir.Finish(rt.Gateway.DefaultImageModel(rt.Config.ModelsInOrder()))
	}
	var req *provider.ChatRequest
	if err == nil {
		req, err = ir.ChatRequest(rt.Gateway.Model(ir.Model))
	}
	if err != nil {
		return m.failed(b, t, env.customID, id, toAPIError(err, "", nil), err)
	}
	// Links unless the line asked for base64 itself.
	links := true
	if v, ok := jsonx.Get(env.body, "response_format"); ok {
		if s, _ := jsonx.Unquote(v); s == "b64_json" {
			links = false
		}
	}
	call := &gateway.Call{ID: id, Caller: caller, Req: req, Batch: true, BatchShare: m.share(rt)}
	defer call.Close()
	ans, err := rt.Gateway.Images(ctx, call, ir.N, links)
	if err != nil {
		if a, ok := m.waitOf(err, call); ok {
			return a
		}
		if ctx.Err() != nil {
			call.Abandon()
			return attempt{abandoned: true}
		}
		a := m.failed(b, t, env.customID, id, toAPIError(err, ir.Model, call), err)
		a.model = ir.Model
		return a
	}
	defer ans.Release()
	out := openai.AppendImagesResponse(nil, ans.Images, ans.Usage, ans.PromptImageTokens())
	line := appendResultLine(make([]byte, 0, len(out)+256), b.ID, t.Line, env.customID, 200, id, compact(out))
	a := attempt{outcome: Completed, line: line, status: 200, model: ir.Model, usage: ans.Usage, cost: call.Close().CostMicros}
	if len(ans.Served) > 0 {
		a.served = ans.Served[0]
		a.served.Attempts = 0
		for _, s := range ans.Served {
			a.served.Attempts += s.Attempts
		}
		a.served.Provider = ans.Provider()
	}
	return a
}

// share is batch.max_share of the configuration in force.
func (m *Manager) share(rt Runtime) float64 {
	if rt.Config != nil && rt.Config.Batch.MaxShare > 0 {
		return rt.Config.Batch.MaxShare
	}
	return m.o.Share
}

// waitOf tells a refusal the batch waits out (room in a limit, the budget,
// Redis) from a failure: such a line did not run and is not recorded.
func (m *Manager) waitOf(err error, call *gateway.Call) (attempt, bool) {
	switch {
	case errors.Is(err, gateway.ErrRateLimited) && call != nil && call.Limit != nil && call.Limit.RetryAfter > 0:
		return attempt{wait: call.Limit.RetryAfter, why: "rate_limit"}, true
	case errors.Is(err, gateway.ErrBudgetExceeded):
		return attempt{wait: m.o.BudgetPause, why: "budget"}, true
	case errors.Is(err, gateway.ErrLimiterUnavailable), errors.Is(err, gateway.ErrAccountingUnavailable):
		return attempt{wait: m.o.LimiterPause, why: "limiter"}, true
	}
	return attempt{}, false
}

// failed is the error file line of a failure answered with e.
func (m *Manager) failed(b *Batch, t *Task, customID []byte, reqID string, e *apiError, err error) attempt {
	if reqID == "" {
		reqID = callID(b.ID, t.Line, t.try)
	}
	body := appendErrorBody(make([]byte, 0, 160+len(e.Message)), e)
	a := attempt{outcome: Failed, line: appendResultLine(nil, b.ID, t.Line, customID, e.Status, reqID, body),
		status: e.Status, retry: transient(e), errorCode: e.Code, err: err}
	var ov *router.Overloaded
	if errors.As(err, &ov) {
		a.overload = max(ov.RetryAfter, time.Millisecond)
		if m.o.MaxOverloadWait > 0 {
			a.overload = min(a.overload, m.o.MaxOverloadWait)
		}
	}
	return a
}

func nonce() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
