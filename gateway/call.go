package gateway

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/internal/safemath"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// Call is one request's journey from its admission to its record. A front
// end (the HTTP server, a batch worker) makes one, runs it through Chat,
// ChatStream or Images, and closes it when the answer is out: Close bills
// exactly once whatever happened (refused, failed, streamed, fanned out,
// abandoned), so no caller decides what to record.
type Call struct {
	// ID is a server-made unique id: records are counted once per id, so
	// it is never the client's x-request-id.
	ID     string
	Caller *auth.Caller
	Req    *provider.ChatRequest
	// Batch marks a line of a batch (package batch): the rate limiter also
	// checks and charges the batch-only buckets holding BatchShare
	// (batch.max_share) of each limit, so that interactive traffic keeps
	// the rest.
	Batch      bool
	BatchShare float64
	// Limit is the rate-limit decision, for the x-ratelimit-* headers; nil
	// when no limiter ran.
	Limit *ratelimit.Result
	// Warning is a Warning header for the answer (a model id Google
	// retired), "" for none.
	Warning string

	g    *Gateway
	resv *accounting.Reservation
	// admitted: past the limits, the model check and the budget.
	admitted bool
	limitReq ratelimit.Request
	tokens   int64 // estimate charged to the TPM buckets
	charged  bool
	// images asked for by an Images API request (each its own upstream
	// call); 0 for chat, where the request's n counts.
	images int
	// links overrides whether the caller's images become links: the
	// Images API's response_format decides; nil for chat.
	links *bool

	// The outcome, set by the journey: the provider that served and what
	// it billed (status 200), or the failure's status.
	served router.Served
	usage  Usage
	status int
	stream bool
	// subs are the other upstream calls of a fanned-out request, each
	// recorded under an id of its own when the call closes.
	subs      []*Call
	abandoned bool
	closed    bool
	bill      Bill
}

// Bill is what a closed call was billed, over every upstream call it made.
type Bill struct {
	// CostMicros is the cost in millionths of a dollar.
	CostMicros int64
	// Size is the image size billed.
	Size string
}

// succeed sets the call's outcome: served, billed u.
func (c *Call) succeed(served router.Served, u Usage) {
	c.served, c.usage, c.status = served, u, 200
}

// fail sets the call's outcome to the failure err after the upstream calls
// of served.
func (c *Call) fail(served router.Served, err error) {
	c.served, c.usage, c.status = served, Usage{}, failedStatus(err)
}

// sub adds an upstream call of a fanned-out request, numbered n (2 and
// up), to be recorded with the call.
func (c *Call) sub(n int) *Call {
	s := &Call{ID: c.ID + "-" + strconv.Itoa(n), Caller: c.Caller, Req: c.Req, g: c.g, admitted: true}
	c.subs = append(c.subs, s)
	return s
}

// LastTried names the provider each upstream call of the call tried last
// (its own, then those it fanned out to), distinct and comma-separated in
// that order, "" when none was tried: what names the providers of a failed
// answer.
func (c *Call) LastTried() string {
	var names []string
	add := func(s router.Served) {
		if n := len(s.Tried); n > 0 && !slices.Contains(names, s.Tried[n-1]) {
			names = append(names, s.Tried[n-1])
		}
	}
	add(c.served)
	for _, s := range c.subs {
		add(s.served)
	}
	return strings.Join(names, ",")
}

// Admitted reports whether the call got past admission.
func (c *Call) Admitted() bool { return c.admitted }

// Abandon marks a call that will run again later under the same id (a
// batch line whose replica is stopping): Close then records nothing, and
// gives back its reservation and tokens.
func (c *Call) Abandon() { c.abandoned = true }

// Close records the call, once: each upstream call it made billed at the
// provider that served it, or as failed (costing nothing); the TPM estimate
// settled to what was used; the budget reservation settled or given back.
// A call refused at admission has nothing to record (admission gave back
// what it held). It never blocks: records go to a queue written off the
// response path. Closing twice returns the first bill.
func (c *Call) Close() Bill {
	if c.closed {
		return c.bill
	}
	c.closed = true
	g := c.g
	if g == nil || !c.admitted {
		return c.bill
	}
	if c.abandoned {
		g.release(c)
		g.settleTokens(c, 0)
		return c.bill
	}
	used := c.used()
	for _, s := range c.subs {
		used = safemath.Add(used, s.used())
	}
	g.settleTokens(c, used)
	for _, s := range c.subs {
		c.bill.CostMicros = safemath.Add(c.bill.CostMicros, g.record(s).CostMicros)
	}
	rec := g.record(c)
	c.bill.CostMicros = safemath.Add(c.bill.CostMicros, rec.CostMicros)
	c.bill.Size = rec.Size
	return c.bill
}

// used is the tokens the call's own upstream call used.
func (c *Call) used() int64 {
	if c.status != 200 {
		return 0
	}
	return safemath.Sum(c.usage.PromptTokens, c.usage.TextTokens, c.usage.ImageTokens)
}

// record writes the usage record of one upstream call.
func (g *Gateway) record(c *Call) accounting.Record {
	status := c.status
	if status == 0 {
		status = 500 // no outcome was set: the journey ended unexpectedly
	}
	rec := accounting.Record{
		ID: c.ID, Time: time.Now(), Model: c.Req.Model, Size: g.imageSize(c.Req), Provider: c.served.Provider,
		Attempts: c.served.Attempts, Status: status, Stream: c.stream,
	}
	if c.Caller != nil {
		rec.Key, rec.Team = c.Caller.Name, c.Caller.Team
	}
	u := c.usage
	if rec.Provider != "" && status == 200 {
		rec.Images, rec.PromptTokens, rec.TextTokens, rec.ImageTokens = u.Images, u.PromptTokens, u.TextTokens, u.ImageTokens
	} else {
		rec.Provider = ""
	}
	if g.acct == nil {
		return rec
	}
	g.acct.Pricer.Charge(&rec)
	g.acct.Recorder.Record(rec)
	c.resv = nil
	return rec
}

// failedStatus is the HTTP status a failed upstream call stands for in its
// usage record: the one the client is answered with.
func failedStatus(err error) int {
	var ov *router.Overloaded
	var cp *ContentPolicyError
	var re *provider.RequestError
	switch {
	case errors.As(err, &ov):
		if ov.AllOut {
			return 503
		}
		return 429
	case errors.As(err, &cp), errors.As(err, &re):
		return 400
	case errors.Is(err, provider.ErrFetchBusy), errors.Is(err, router.ErrNoProvider):
		return 503
	}
	pe, ok := provider.AsError(err)
	switch {
	case !ok:
		return 502
	case pe.Kind == provider.KindClient && pe.Status >= 400:
		return pe.Status
	case pe.Kind == provider.KindTimeout:
		return 504
	case pe.Kind == provider.KindCanceled:
		return 499
	}
	return 502
}
