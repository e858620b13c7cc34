// Package router chooses providers for a model and fails over between them.
// It is the one place that decides whether a failed call is tried again, and
// where.
package router

import (
	"context"
	"errors"
	"sort"
	"time"

	"nanogate/config"
	"nanogate/provider"
)

// ErrNoProvider means no enabled provider maps the model.
var ErrNoProvider = errors.New("no provider available")

// Candidate is a provider able to serve a model.
type Candidate struct {
	Provider provider.Provider
	// Model is the provider's name for the public model.
	Model   string
	Price   config.Price
	Timeout time.Duration
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
	byModel     map[string][]Candidate
	maxAttempts int
}

// Entry pairs a provider with its configuration.
type Entry struct {
	Provider provider.Provider
	Config   config.Provider
}

// New builds a router over the enabled providers.
func New(entries []Entry, rc config.Routing) *Router {
	r := &Router{byModel: map[string][]Candidate{}, maxAttempts: rc.MaxAttempts}
	if r.maxAttempts < 1 {
		r.maxAttempts = 1
	}
	for _, e := range entries {
		if e.Config.Disabled {
			continue
		}
		for public, name := range e.Config.Models {
			r.byModel[public] = append(r.byModel[public], Candidate{
				Provider: e.Provider, Model: name, Price: e.Config.Price, Timeout: e.Config.Timeout,
			})
		}
	}
	for _, cs := range r.byModel {
		// Cheapest first; the configured order breaks ties.
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].Price.PerImage < cs[j].Price.PerImage })
	}
	return r
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

// Candidates returns the providers for model in the order they are tried.
func (r *Router) Candidates(model string) []Candidate { return r.byModel[model] }

// Chat runs a non-stream request, failing over while attempts remain.
func (r *Router) Chat(ctx context.Context, req *provider.ChatRequest) (*provider.Result, Served, error) {
	var res *provider.Result
	served, err := r.try(ctx, req.Model, false, func(ctx context.Context, c Candidate) error {
		var err error
		res, err = c.Provider.Chat(ctx, req, c.Model)
		return err
	})
	return res, served, err
}

// ChatStream opens a stream and reads its first event, so that a provider
// failing before anything reached the client is still failed over.
func (r *Router) ChatStream(ctx context.Context, req *provider.ChatRequest) (provider.Stream, *provider.Event, Served, error) {
	var st provider.Stream
	var first *provider.Event
	served, err := r.try(ctx, req.Model, true, func(ctx context.Context, c Candidate) error {
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
// client's, or attempts run out. With keep, the successful attempt's context
// outlives try (a stream is still being read) and ends with ctx.
func (r *Router) try(ctx context.Context, model string, keep bool, call func(context.Context, Candidate) error) (Served, error) {
	var served Served
	cands := r.byModel[model]
	if len(cands) == 0 {
		return served, ErrNoProvider
	}
	var last error
	for _, c := range cands {
		if served.Attempts >= r.maxAttempts {
			break
		}
		served.Attempts++
		served.Tried = append(served.Tried, c.Provider.Name())
		actx, cancel := context.WithTimeout(ctx, c.Timeout)
		err := call(actx, c)
		if err == nil {
			served.Provider, served.Price = c.Provider.Name(), c.Price
			if keep {
				context.AfterFunc(ctx, cancel)
			} else {
				cancel()
			}
			return served, nil
		}
		cancel()
		last = err
		if pe, ok := provider.AsError(err); ok && !pe.Failover() {
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	return served, last
}
