// Package router chooses providers for a model by price and health, guards
// each with a circuit breaker, and fails over between them. It is the one
// place that decides whether a failed call is tried again, and where.
package router

import (
	"context"
	"errors"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"nanogate/config"
	"nanogate/internal/deadline"
	"nanogate/internal/reqid"
	"nanogate/metrics"
	"nanogate/provider"
	"nanogate/telemetry"
)

// ErrNoProvider means no enabled provider maps the model, or every one that
// does has its circuit open.
var ErrNoProvider = errors.New("no provider available")

// Overloaded is the failure of a request no provider took: every attempt
// failed before an image could have been made (provider.Error.NothingMade:
// a 429, an error status, a refused connection), or every provider was
// skipped (circuit open, benched by a retry delay). A later retry may
// succeed and cannot buy an image twice.
type Overloaded struct {
	// AllOut: no provider of the model may take a request now.
	AllOut bool
	// RetryAfter is when a retry may succeed: with AllOut, the earliest
	// time a provider is usable again; otherwise the smallest delay an
	// upstream asked for (bounded by routing.health.max_retry_after), or a
	// second when none did.
	RetryAfter time.Duration
	// Last is the last upstream failure; nil when no attempt was made.
	Last error
}

// Error says how long to wait, with the last provider's failure.
func (e *Overloaded) Error() string {
	if e.Last != nil {
		return e.Last.Error()
	}
	return ErrNoProvider.Error()
}

// Unwrap returns the last provider's failure.
func (e *Overloaded) Unwrap() error { return e.Last }

// Is makes errors.Is(err, ErrNoProvider) true when every provider is out.
func (e *Overloaded) Is(target error) bool { return target == ErrNoProvider && e.AllOut }

// defaultRetryAfter is the retry delay of an overload whose upstreams named
// none, with providers still usable.
const defaultRetryAfter = time.Second

// overloaded describes the failure of a request over cands after its
// attempts: last is the last upstream error (nil: none was tried), asked the
// smallest delay an upstream asked for (0: none).
func (r *Router) overloaded(cands []ranked, last error, asked time.Duration) *Overloaded {
	now := time.Now()
	soonest := time.Duration(-1)
	for i := range cands {
		if d := cands[i].c.health.wait(now); soonest < 0 || d < soonest {
			soonest = d
		}
	}
	e := &Overloaded{Last: last, AllOut: soonest > 0}
	switch {
	case e.AllOut:
		e.RetryAfter = soonest
	case asked > 0:
		e.RetryAfter = min(asked, r.maxBench)
	default:
		e.RetryAfter = defaultRetryAfter
	}
	return e
}

// Candidate is a provider able to serve a model.
type Candidate struct {
	Provider provider.Provider
	// Model is the provider's name for the public model.
	Model   string
	Price   config.Price
	Timeout time.Duration
	health  *health
}

// Served says who answered a request and after how many attempts.
type Served struct {
	Provider string
	Price    config.Price
	Attempts int
	// Tried lists the providers called, in order.
	Tried []string
}

// Router holds the candidates per public model.
type Router struct {
	byModel map[string][]*Candidate
	// upstreams are the enabled providers in config order, byName the same
	// by name.
	upstreams   []*upstream
	byName      map[string]*upstream
	maxAttempts int
	maxBench    time.Duration // routing.health.max_retry_after
	strategy    strategy
	log         *zap.Logger
}

// upstream is one enabled provider as the router knows it.
type upstream struct {
	name   string
	kind   config.ProviderKind
	price  config.Price
	models map[string]float64 // public model -> per image, default size
	health *health
}

// Entry pairs a provider with its configuration.
type Entry struct {
	Provider provider.Provider
	Config   config.Provider
	// Prices are what the provider bills per public model, when that is not
	// Config.Price (a model of its own price, or a catalogued model on the
	// gemini kind, priced per image size): the price the cheapest strategy
	// ranks it by.
	Prices map[string]config.Price
}

// New builds a router over the enabled providers. Circuit state and latency
// of providers that prev also had carry over (a reload does not forget that a
// provider is failing). m may be nil.
func New(entries []Entry, rc config.Routing, prev *Router, log *zap.Logger, m *metrics.Metrics) *Router {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Router{
		byModel:     map[string][]*Candidate{},
		byName:      map[string]*upstream{},
		maxAttempts: max(rc.MaxAttempts, 1),
		strategy:    strategyFor(rc.Strategy),
		log:         log,
	}
	threshold := max(rc.Health.FailureThreshold, 1)
	cooldown := rc.Health.Cooldown
	if cooldown <= 0 {
		cooldown = 30 * time.Second
	}
	maxBench := rc.Health.MaxRetryAfter
	if maxBench <= 0 {
		maxBench = config.DefaultMaxRetryAfter
	}
	r.maxBench = maxBench
	for _, e := range entries {
		if e.Config.Disabled {
			continue
		}
		name := e.Config.Name
		var h *health
		if old := prev.upstream(name); old != nil {
			h = old.health
			h.mu.Lock()
			h.threshold, h.cooldown, h.maxBench, h.log = threshold, cooldown, maxBench, log
			// A bench a previous config allowed ends within the new cap.
			if limit := time.Now().Add(maxBench); h.benchedUntil.After(limit) {
				h.benchedUntil = limit
			}
			h.mu.Unlock()
		} else {
			h = &health{name: name, threshold: threshold, cooldown: cooldown, maxBench: maxBench, log: log}
			if m != nil {
				h.obs = observers{
					ok:           m.Upstream.WithLabelValues(name, "ok"),
					fail:         m.Upstream.WithLabelValues(name, "failure"),
					state:        m.CircuitState.WithLabelValues(name),
					toOpen:       m.Transitions.WithLabelValues(name, "open"),
					toHalfOpen:   m.Transitions.WithLabelValues(name, "half_open"),
					toHealthy:    m.Transitions.WithLabelValues(name, "healthy"),
					enabledStats: true,
				}
				h.setGauge()
			}
		}
		u := &upstream{name: name, kind: e.Provider.Kind(), price: e.Config.Price, health: h,
			models: make(map[string]float64, len(e.Config.Models))}
		r.upstreams = append(r.upstreams, u)
		r.byName[name] = u
		for public, upstream := range e.Config.Models {
			price, ok := e.Prices[public]
			if !ok {
				price = e.Config.Price
			}
			u.models[public] = price.PerImage
			r.byModel[public] = append(r.byModel[public], &Candidate{
				Provider: e.Provider, Model: upstream, Price: price, Timeout: e.Config.Timeout, health: h,
			})
		}
	}
	return r
}

// upstream returns the enabled provider named name, nil when there is none
// (or no router).
func (r *Router) upstream(name string) *upstream {
	if r == nil {
		return nil
	}
	return r.byName[name]
}

// Knows reports whether an enabled provider maps model.
func (r *Router) Knows(model string) bool { return len(r.byModel[model]) > 0 }

// Models returns the public models with at least one enabled provider.
func (r *Router) Models() []string {
	out := make([]string, 0, len(r.byModel))
	for m := range r.byModel {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Usable reports whether some provider could take a request now.
func (r *Router) Usable() bool {
	now := time.Now()
	for _, u := range r.upstreams {
		if u.health.usable(now) {
			return true
		}
	}
	return false
}

// Statuses returns every provider's health, in config order.
func (r *Router) Statuses() []Status {
	now := time.Now()
	out := make([]Status, 0, len(r.upstreams))
	for _, u := range r.upstreams {
		s := u.health.status(now)
		s.Kind = u.kind
		s.PerImageUSD = u.price.PerImage
		s.PerImageUSDByModel = u.models
		out = append(out, s)
	}
	return out
}

// order returns the candidates for model in the order the strategy tries
// them, priced per image of size ("" for the model's default).
func (r *Router) order(model, size string, buf []ranked) []ranked {
	for _, c := range r.byModel[model] {
		buf = append(buf, ranked{c: c, price: c.Price.PerImageAt(size), ewmaMS: c.health.ewma()})
	}
	// An insertion sort: stable, and without sort.SliceStable's allocations
	// for the few candidates a model has.
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && r.strategy.Less(buf[j], buf[j-1]); j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	return buf
}

// Chat runs a non-stream request, failing over while attempts remain.
// Images fetched for req are dropped when it returns. Concurrent calls with
// one req are for requests without image URLs (the Images API).
func (r *Router) Chat(ctx context.Context, req *provider.ChatRequest) (*provider.Result, Served, error) {
	defer req.ReleaseImages()
	var res *provider.Result
	served, err := r.try(ctx, req, false, func(ctx context.Context, c *Candidate) error {
		var err error
		res, err = c.Provider.Chat(ctx, req, c.Model)
		return err
	})
	return res, served, err
}

// ChatStream opens a stream and reads its first event, so that a provider
// failing before anything reached the client is still failed over.
// Its request has been sent by then: images fetched for req are dropped.
func (r *Router) ChatStream(ctx context.Context, req *provider.ChatRequest) (provider.Stream, *provider.Event, Served, error) {
	defer req.ReleaseImages()
	var st provider.Stream
	var first *provider.Event
	served, err := r.try(ctx, req, true, func(ctx context.Context, c *Candidate) error {
		s, err := c.Provider.ChatStream(ctx, req, c.Model)
		if err != nil {
			return err
		}
		ev, err := s.Next()
		if err != nil {
			s.Close()
			return err
		}
		st, first = s, ev
		return nil
	})
	return st, first, served, err
}

// try calls candidates in order until one succeeds, a failure is the
// client's, or attempts run out. Providers whose circuit is open (or benched
// by a 429) are skipped without counting an attempt. With keep, the
// successful attempt's context outlives try (a stream is still being read)
// and ends with ctx.
//
// A candidate that is a provider.Preparer gets req prepared before its
// attempt (the gemini kind fetches image URLs): under ctx, not the
// attempt's timeout, and neither timed nor reported to its health, since
// that work and its failures are the client's. Its error ends the request.
func (r *Router) try(ctx context.Context, req *provider.ChatRequest, keep bool, call func(context.Context, *Candidate) error) (Served, error) {
	var served Served
	var buf [8]ranked
	cands := r.order(req.Model, req.ImageSize, buf[:0])
	if len(cands) == 0 {
		return served, ErrNoProvider
	}
	var last error
	var asked time.Duration // the smallest delay an upstream asked for
	nothingMade := true     // no attempt could have produced an image
	for i := range cands {
		if served.Attempts >= r.maxAttempts {
			break
		}
		c := cands[i].c
		if p, ok := c.Provider.(provider.Preparer); ok && c.health.usable(time.Now()) {
			pctx, end := telemetry.Span(ctx, "image fetch")
			err := p.Prepare(pctx, req, c.Model)
			end(err)
			if err != nil {
				return served, err
			}
		}
		ok, trial := c.health.allow(time.Now())
		if !ok {
			continue
		}
		served.Attempts++
		served.Tried = append(served.Tried, c.Provider.Name())
		// No timer per attempt: the upstream client holds the connection to
		// the deadline.
		att := deadline.With(ctx, c.Timeout)
		var actx context.Context = att
		var span trace.Span
		if telemetry.Enabled() {
			actx, span = telemetry.Tracer().Start(actx, "upstream "+c.Provider.Name(), trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(attribute.String("nanogate.provider", c.Provider.Name()),
					attribute.String("gen_ai.request.model", c.Model), attribute.Int("nanogate.attempt", served.Attempts)))
		}
		start := time.Now()
		err := call(actx, c)
		if span != nil {
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
		c.health.report(time.Now(), trial, err, time.Since(start))
		if err == nil {
			served.Provider, served.Price = c.Provider.Name(), c.Price
			if !keep {
				att.Release()
			}
			return served, nil
		}
		att.Release()
		last = err
		pe, ok := provider.AsError(err)
		if ok && pe.Kind != provider.KindCanceled {
			// provider.Error messages hold no key or upstream host.
			r.log.Info("upstream attempt failed", zap.String("request_id", reqid.From(ctx)),
				zap.String("provider", c.Provider.Name()), zap.Int("attempt", served.Attempts),
				zap.Int("status", pe.Status), zap.String("reason", pe.Error()))
		}
		if !ok || !pe.NothingMade() {
			nothingMade = false
		} else if pe.RetryAfter > 0 && (asked == 0 || pe.RetryAfter < asked) {
			asked = pe.RetryAfter
		}
		if ok && !pe.Failover() {
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	if served.Attempts == 0 || (nothingMade && ctx.Err() == nil) {
		return served, r.overloaded(cands, last, asked)
	}
	return served, last
}
