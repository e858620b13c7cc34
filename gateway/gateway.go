// Package gateway is the journey of one request, as plain functions over plain
// types: check the caller may use the model, route it to providers with
// failover, and count what it used. The HTTP server (package proxy) and batch
// workers both call it; it knows nothing of either.
package gateway

import (
	"context"
	"errors"

	"nanogate/auth"
	"nanogate/provider"
	"nanogate/router"
)

// Sentinel errors callers branch on.
var (
	// ErrModelNotAllowed: the caller's key may not use the model.
	ErrModelNotAllowed = errors.New("model not allowed for this key")
	// ErrUnknownModel: no provider maps the model.
	ErrUnknownModel = errors.New("model not found")
)

// Gateway runs requests.
type Gateway struct {
	router         *router.Router
	tokensPerImage int64
}

// New returns a Gateway routing through r, billing tokensPerImage per image.
func New(r *router.Router, tokensPerImage int) *Gateway {
	return &Gateway{router: r, tokensPerImage: int64(tokensPerImage)}
}

// Router returns the router (for model listings).
func (g *Gateway) Router() *router.Router { return g.router }

// Usage is what a request used, with every image billed at the gateway's
// tokens-per-image whatever the upstream reported.
type Usage struct {
	PromptTokens     int64
	TextTokens       int64
	Images           int64
	ImageTokens      int64
	CompletionTokens int64
	TotalTokens      int64
}

// Bill computes Usage from an upstream report and the images produced.
func (g *Gateway) Bill(u provider.Usage, images int) Usage {
	out := Usage{PromptTokens: u.PromptTokens, TextTokens: u.TextTokens, Images: int64(images)}
	out.ImageTokens = out.Images * g.tokensPerImage
	out.CompletionTokens = out.TextTokens + out.ImageTokens
	out.TotalTokens = out.PromptTokens + out.CompletionTokens
	return out
}

// Answer is a finished non-stream request.
type Answer struct {
	Result *provider.Result
	Served router.Served
	Usage  Usage
}

// StreamAnswer is an open stream whose first event has arrived.
type StreamAnswer struct {
	Stream provider.Stream
	First  *provider.Event
	Served router.Served
}

// Check returns an error when the caller may not run req.
func (g *Gateway) Check(caller *auth.Caller, model string) error {
	if !g.router.Knows(model) {
		return ErrUnknownModel
	}
	if caller != nil && !caller.Allows(model) {
		return ErrModelNotAllowed
	}
	return nil
}

// Chat runs a non-stream chat request. The Answer's result must be released.
func (g *Gateway) Chat(ctx context.Context, caller *auth.Caller, req *provider.ChatRequest) (*Answer, router.Served, error) {
	if err := g.Check(caller, req.Model); err != nil {
		return nil, router.Served{}, err
	}
	res, served, err := g.router.Chat(ctx, req)
	if err != nil {
		return nil, served, err
	}
	return &Answer{Result: res, Served: served, Usage: g.Bill(res.Usage, res.Images())}, served, nil
}

// ChatStream opens a stream for req. The stream must be closed.
func (g *Gateway) ChatStream(ctx context.Context, caller *auth.Caller, req *provider.ChatRequest) (*StreamAnswer, router.Served, error) {
	if err := g.Check(caller, req.Model); err != nil {
		return nil, router.Served{}, err
	}
	st, first, served, err := g.router.ChatStream(ctx, req)
	if err != nil {
		return nil, served, err
	}
	return &StreamAnswer{Stream: st, First: first, Served: served}, served, nil
}
