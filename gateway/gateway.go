// Package gateway is the journey of one request, as plain functions over plain
// types: check the caller may use the model, route it to providers with
// failover, and count what it used. The HTTP server (package proxy) and batch
// workers both call it; it knows nothing of either.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/catalog"
	"nanogate/images"
	"nanogate/images/signatures"
	"nanogate/internal/safemath"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
	"nanogate/telemetry"
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
	offload        *images.Offloader
	offloadDefault bool
	log            *zap.Logger
	acct           *Accounting
	budgetDown     atomic.Bool
	limiter        ratelimit.Limiter
	usageClamped   func(provider, field string)
	modelOf        func(public string) *catalog.Model
	catalog        *catalog.Catalog
	fetches        *provider.ImageFetches
	hostedDown     atomic.Bool
	// retiredWarned holds the retired ids clients asked for, logged once.
	retiredWarned sync.Map
	// clampWarned holds the providers whose usage was clamped and logged,
	// so that a misbehaving upstream is logged once, not per request.
	clampWarned sync.Map
	// unsignedWarned holds the models that signed an image the catalogue
	// said they would not, logged once.
	unsignedWarned sync.Map
	sigs           signatures.Store
	sigTTL         time.Duration
	sigFailures    atomic.Uint64
	sigWarned      atomic.Bool
}

// Options are the parts of a Gateway besides its router.
type Options struct {
	// TokensPerImage is billed per generated image (billing.tokens_per_image).
	TokensPerImage int
	// Offload stores images and returns links; nil when no store is set up.
	Offload *images.Offloader
	// OffloadDefault is images.offload.enabled; a key's offload_images
	// overrides it.
	OffloadDefault bool
	Log            *zap.Logger
	// Accounting bills requests and holds team budgets; nil: not counted.
	Accounting *Accounting
	// Limiter enforces RPM and TPM; nil: no limits.
	Limiter ratelimit.Limiter
	// UsageClamped counts an upstream usage field (prompt, text) that was
	// out of bounds and clamped; nil: not counted.
	UsageClamped func(provider, field string)
	// ModelOf returns the catalogue's model for a public model name, nil
	// when the catalogue does not know it (config.Config.ModelOf); nil:
	// no catalogue, every image billed TokensPerImage.
	ModelOf func(public string) *catalog.Model
	// Catalog names the model ids Google retired and their successors; nil:
	// none known.
	Catalog *catalog.Catalog
	// Fetches copies a reseller's hosted images into the store when images
	// become links; nil: hosted links go to the client as they are.
	Fetches *provider.ImageFetches
	// Signatures keeps the thought signatures of generated images, for
	// SignatureTTL (default 24h); nil: they are not kept.
	Signatures   signatures.Store
	SignatureTTL time.Duration
}

// New returns a Gateway routing through r.
func New(r *router.Router, o Options) *Gateway {
	if o.TokensPerImage <= 0 {
		o.TokensPerImage = 1290
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	g := &Gateway{router: r, tokensPerImage: int64(o.TokensPerImage), offload: o.Offload,
		offloadDefault: o.OffloadDefault, log: o.Log, acct: o.Accounting, limiter: o.Limiter,
		usageClamped: o.UsageClamped, modelOf: o.ModelOf, catalog: o.Catalog, fetches: o.Fetches, sigs: o.Signatures, sigTTL: o.SignatureTTL}
	if g.sigTTL <= 0 {
		g.sigTTL = 24 * time.Hour
	}
	return g
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

// bill computes Usage from an upstream report and the images produced,
// with the reported tokens clamped to what the request could have used
// (see usageCaps): a negative count is 0, and one beyond its cap is billed at
// the cap, counted and logged once per provider. Image tokens are the
// upstream's own count when it lists one, else the catalogue's per image.
// Every sum saturates.
func (g *Gateway) bill(caps usageCaps, prov string, u provider.Usage, images int) Usage {
	out := Usage{Images: int64(max(images, 0))}
	out.PromptTokens = g.clampUsage(prov, "prompt", u.PromptTokens, caps.prompt)
	out.TextTokens = g.clampUsage(prov, "text", u.TextTokens, caps.text)
	out.ImageTokens = safemath.Mul(out.Images, caps.perImage)
	if u.ImageTokensListed && out.Images > 0 {
		// Google's own count is billed, within twice the catalogue's (or
		// billing.tokens_per_image) per image: a size the catalogue does
		// not price the same, never a count that could lock a team out.
		out.ImageTokens = g.clampUsage(prov, "image", u.ImageTokens, safemath.Mul(out.ImageTokens, 2))
	}
	out.CompletionTokens = safemath.Add(out.TextTokens, out.ImageTokens)
	out.TotalTokens = safemath.Add(out.PromptTokens, out.CompletionTokens)
	return out
}

// clampUsage bounds one reported count to [0, limit].
func (g *Gateway) clampUsage(prov, field string, n, limit int64) int64 {
	if n >= 0 && n <= limit {
		return n
	}
	if g.usageClamped != nil {
		g.usageClamped(prov, field)
	}
	if _, logged := g.clampWarned.LoadOrStore(prov, true); !logged {
		g.log.Warn("upstream reported usage out of bounds; billing the bound instead (logged once per provider)",
			zap.String("provider", prov), zap.String("field", field), zap.Int64("reported", n), zap.Int64("bound", limit))
	}
	return safemath.Clamp(n, 0, limit)
}

// usageCaps are the most tokens a request could have used: its prompt
// estimate times promptSlack plus promptFloor (estimates are rough: CJK text
// or high-resolution image inputs count more than they guess), and the
// model's output limit for each candidate. perImage is what one image bills.
type usageCaps struct{ prompt, text, perImage int64 }

const (
	promptSlack = 8
	promptFloor = 4096
)

func (g *Gateway) capsFor(req *provider.ChatRequest) usageCaps {
	return usageCaps{
		prompt:   safemath.Add(safemath.Mul(g.estimateTokens(req), promptSlack), promptFloor),
		text:     int64(max(req.N, 1)) * provider.MaxOutputTokens,
		perImage: g.imageTokens(req),
	}
}

// resolveRetired handles a request for a model id Google retired: the
// answer carries a Warning naming the successor, the first such request of
// each id is logged, and when this gateway does not serve the old id but
// serves the successor under its own name, the successor serves it.
func (g *Gateway) resolveRetired(call *Call) {
	if g.catalog == nil {
		return
	}
	asked := call.Req.Model
	m, on, ok := g.catalog.Lookup(asked)
	if !ok || on == "" {
		return
	}
	call.Warning = `299 nanogate "` + asked + ` was retired by Google on ` + on + `; use ` + m.Name + `"`
	if !g.router.Knows(asked) && g.router.Knows(m.Name) {
		call.Req.Model = m.Name
	}
	if _, logged := g.retiredWarned.LoadOrStore(asked, true); !logged {
		g.log.Warn("a client asked for a model Google retired (logged once per model)",
			zap.String("model", asked), zap.String("retired_on", on), zap.String("successor", m.Name),
			zap.String("served_as", call.Req.Model))
	}
}

// Model returns the catalogue's model for a public name, nil when unknown.
func (g *Gateway) Model(public string) *catalog.Model {
	if g.modelOf == nil {
		return nil
	}
	return g.modelOf(public)
}

// imageTokens are the output tokens one image of req bills: the
// catalogue's for its model and size, else billing.tokens_per_image.
func (g *Gateway) imageTokens(req *provider.ChatRequest) int64 {
	if m := g.Model(req.Model); m != nil {
		if t, ok := m.ImageTokens(req.ImageSize); ok {
			return t
		}
	}
	return g.tokensPerImage
}

// imageSize is the size req's images are billed at: the one asked for, or
// the catalogue model's default; "" for a model the catalogue does not know
// that asked for none.
func (g *Gateway) imageSize(req *provider.ChatRequest) string {
	if req.ImageSize == "" {
		if m := g.Model(req.Model); m != nil {
			return m.DefaultSize
		}
	}
	return req.ImageSize
}

// checkModelParams refuses what the catalogue says the model cannot do: an
// image size or aspect ratio it does not make, max_tokens above its output
// limit. A model the catalogue does not know gets the request as sent.
func (g *Gateway) checkModelParams(req *provider.ChatRequest) error {
	m := g.Model(req.Model)
	if m == nil {
		return nil
	}
	if _, ok := m.Size(req.ImageSize); !ok {
		return &provider.RequestError{Param: "image_config.image_size", Msg: fmt.Sprintf(
			"'image_config.image_size' must be one of %s for %s.", strings.Join(m.SizeNames(), ", "), req.Model)}
	}
	if req.AspectRatio != "" && !m.AllowsAspect(req.AspectRatio) {
		return &provider.RequestError{Param: "image_config.aspect_ratio", Msg: fmt.Sprintf(
			"'image_config.aspect_ratio' must be one of %s for %s.", strings.Join(m.AspectRatios, ", "), req.Model)}
	}
	if req.MaxTokens > m.MaxOutputTokens {
		return &provider.RequestError{Param: "max_tokens", Msg: fmt.Sprintf(
			"'max_tokens' must be at most %d for %s (its output limit).", m.MaxOutputTokens, req.Model)}
	}
	return nil
}

// Answer is a finished non-stream request.
type Answer struct {
	Result *provider.Result
	Served router.Served
	Usage  Usage
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

// admit runs what comes before routing: the rate limits, the model check,
// the budget reservation and the resolution of image links. On error nothing
// is held. The limits come first so that requests for unknown or forbidden
// models count against them like any other: a refusal is not free.
func (g *Gateway) admit(ctx context.Context, call *Call) (err error) {
	call.g = g
	ctx, end := telemetry.Span(ctx, "admission")
	defer func() { end(err) }()
	g.resolveRetired(call)
	if err := g.checkModelParams(call.Req); err != nil {
		return err
	}
	if err := g.limitAndReserve(ctx, call); err != nil {
		return err
	}
	if err := g.resolveLinks(ctx, call.Req); err != nil {
		g.release(call)
		g.settleTokens(call, 0)
		return err
	}
	g.recallSignatures(ctx, call.Req)
	call.admitted = true
	return nil
}

// Chat runs a non-stream chat request. The Answer's result must be released
// and the call closed, whatever the outcome.
func (g *Gateway) Chat(ctx context.Context, call *Call) (*Answer, router.Served, error) {
	if err := g.admit(ctx, call); err != nil {
		return nil, router.Served{}, err
	}
	req := call.Req
	if req.N > 1 {
		return g.chatFanOut(ctx, call)
	}
	res, served, err := g.router.Chat(ctx, req)
	if err != nil {
		call.fail(served, err)
		return nil, served, err
	}
	return g.answered(ctx, call, res, served), served, nil
}

// answered applies the journey to a whole answer of the call's one upstream
// call (images stored, signatures kept) and bills it on the call.
func (g *Gateway) answered(ctx context.Context, call *Call, res *provider.Result, served router.Served) *Answer {
	if g.Offloads(call) {
		for i := range res.Choices {
			for j := range res.Choices[i].Images {
				g.offloadImage(ctx, &res.Choices[i].Images[j])
			}
		}
	}
	g.keepSignatures(ctx, res)
	u := g.bill(g.capsFor(call.Req), served.Provider, res.Usage, res.Images())
	call.succeed(served, u)
	return &Answer{Result: res, Served: served, Usage: u}
}

// chatFanOut runs a chat request for n answers as n upstream calls of one
// answer each, at once (Google's image models take no candidateCount), each
// routed and failed over on its own. The answer holds the choices of the
// calls that succeeded, numbered in order; it fails only when none did. The
// first successful call is the request's own record; the others are its
// subs, each recorded at the provider that served it when the call closes.
func (g *Gateway) chatFanOut(ctx context.Context, call *Call) (*Answer, router.Served, error) {
	n := call.Req.N
	type outcome struct {
		req    *provider.ChatRequest
		res    *provider.Result
		served router.Served
		err    error
	}
	outs := make([]outcome, n)
	inParallel(n, func(i int) {
		o := &outs[i]
		o.req = call.Req.Single()
		o.res, o.served, o.err = g.router.Chat(ctx, o.req)
	})

	var (
		results []*provider.Result
		total   Usage
		first   = -1
		lastErr error
		offload = g.offloads(call.Caller)
	)
	for i := range outs {
		o := &outs[i]
		if o.err != nil {
			lastErr = o.err
			continue
		}
		if offload {
			for ci := range o.res.Choices {
				for j := range o.res.Choices[ci].Images {
					g.offloadImage(ctx, &o.res.Choices[ci].Images[j])
				}
			}
		}
		g.keepSignatures(ctx, o.res)
		u := g.bill(g.capsFor(o.req), o.served.Provider, o.res.Usage, o.res.Images())
		total = addUsage(total, u)
		results = append(results, o.res)
		if first < 0 {
			first = i
			call.succeed(o.served, u)
			continue
		}
		call.sub(i+1).succeed(o.served, u)
	}
	if first < 0 {
		call.fail(outs[n-1].served, lastErr)
		return nil, outs[n-1].served, lastErr
	}
	served := outs[first].served
	return &Answer{Result: provider.Combine(results), Served: served, Usage: total}, served, nil
}

// inParallel runs fn(0) to fn(n-1) at once and returns when all have: the
// upstream calls a request fans out to.
func inParallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

// ChatStream opens a stream for the call. The stream must be closed (it
// bills what it made on the call), then the call, whatever the outcome.
func (g *Gateway) ChatStream(ctx context.Context, call *Call) (*StreamAnswer, router.Served, error) {
	if err := g.admit(ctx, call); err != nil {
		return nil, router.Served{}, err
	}
	call.stream = true
	if call.Req.N > 1 {
		return g.chatStreamFanOut(ctx, call)
	}
	// Images go on in windows as they arrive (provider.ChatRequest.
	// ForwardStream), unless they become links: the store takes each whole.
	call.Req.ForwardStream = !g.Offloads(call)
	call.Req.ForwardDigest = call.Req.ForwardStream && g.sigs != nil && g.mayBeSigned(call.Req.Model)
	st, first, served, err := g.router.ChatStream(ctx, call.Req)
	if err != nil {
		call.fail(served, err)
		return nil, served, err
	}
	return g.newStreamAnswer(ctx, call, st, first, served), served, nil
}

// Offloads reports whether call's images become links.
func (g *Gateway) Offloads(call *Call) bool {
	if call.links != nil {
		return *call.links && g.offload != nil
	}
	return g.offloads(call.Caller)
}

// offloads reports whether the caller's images become links.
func (g *Gateway) offloads(c *auth.Caller) bool {
	if g.offload == nil {
		return false
	}
	if c != nil && c.OffloadImages != nil {
		return *c.OffloadImages
	}
	return g.offloadDefault
}

// copyHosted copies a reseller's hosted image into the store, so that the
// client's link lasts as long as the store keeps images, whatever the
// reseller does with its own. The fetch is bounded as image URL fetches are
// (images.fetch, the SSRF guard); a link that cannot be copied goes to the
// client as it is.
func (g *Gateway) copyHosted(ctx context.Context, img *provider.Image) {
	if g.fetches == nil {
		return
	}
	mime, data, release, err := g.fetches.Copy(ctx, img.URL)
	if err == nil {
		var link string
		link, err = g.offload.OffloadBytes(ctx, mime, data)
		release()
		if err == nil {
			img.URL, img.MIME = link, mime
			return
		}
	}
	g.warnOnce(&g.hostedDown, "a reseller's hosted image could not be copied into the image store; its link goes to the client as it is", err)
}

// offloadImage stores img and sets its link. A store that fails leaves the
// image inline: the client gets its image either way.
func (g *Gateway) offloadImage(ctx context.Context, img *provider.Image) {
	ctx, end := telemetry.Span(ctx, "image offload")
	defer end(nil)
	if img.URL != "" && len(img.B64) == 0 {
		g.copyHosted(ctx, img)
		return
	}
	link, err := g.offload.Offload(ctx, img.MIME, img.B64)
	if err != nil {
		g.offloadFailed(err)
		return
	}
	img.URL = link
}

// offloadFailed logs an image that could not be stored and goes to the
// client inline.
func (g *Gateway) offloadFailed(err error) {
	g.log.Warn("image offload failed; answering with inline base64", zap.Error(err))
}

// resolveLinks turns image links this gateway issued back into image data,
// read from the store instead of fetched (multi-turn editing with links).
func (g *Gateway) resolveLinks(ctx context.Context, req *provider.ChatRequest) error {
	if g.offload == nil || req.ImageInputs == 0 {
		return nil
	}
	for i := range req.Messages {
		for j := range req.Messages[i].Parts {
			in := req.Messages[i].Parts[j].Image
			if in == nil || in.B64 != nil {
				continue
			}
			mime, b64, ok, err := g.offload.Resolve(ctx, string(in.URL))
			if err != nil {
				return &provider.RequestError{Param: "messages[" + strconv.Itoa(i) + "].content",
					Msg: "The image link cannot be used: " + err.Error()}
			}
			if ok {
				in.MIME, in.B64 = mime, b64
				req.Resolved = true
			}
		}
	}
	return nil
}
