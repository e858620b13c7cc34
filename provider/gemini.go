package provider

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/config"
	"nanogate/internal/jsonx"
	"nanogate/internal/safefetch"
	"nanogate/upstream"
)

// ImageFetcher downloads the image an http(s) image_url of a request points
// at, for kinds whose upstream takes image bytes rather than URLs, charging
// its bytes to b. internal/safefetch's Fetcher is the gateway's, with its
// SSRF guard; an error that is a *safefetch.Error is the client's fault
// (HTTP 400).
type ImageFetcher interface {
	FetchImage(ctx context.Context, url string, b safefetch.Budget) (*safefetch.Image, error)
}

// Gemini is the gemini kind: Google's native generateContent API. Google's
// OpenAI-compatible endpoint does not return generated images in chat
// completions, so requests and answers are translated both ways here.
type Gemini struct {
	name   string
	key    string
	client *upstream.Client
	models string // path up to the model name: .../models/
	opts   Options
	scrub  *scrubber
	images *ImageFetches
	// ownImages: NewGemini made images (Options had none); Close closes it.
	ownImages bool
}

// NewGemini returns the provider described by cfg. Images given by http(s)
// URL are fetched with opts.Images, or with an ImageFetches of its own
// around opts.Fetcher (default: a safefetch.Fetcher).
func NewGemini(cfg config.Provider, opts Options) (*Gemini, error) {
	opts.defaults()
	c, err := upstream.New(cfg.BaseURL, upstream.Options{MaxConns: cfg.MaxConns, MaxBodyBytes: opts.MaxBodyBytes})
	if err != nil {
		return nil, err
	}
	p := &Gemini{
		name:   cfg.Name,
		key:    cfg.APIKey,
		client: c,
		models: c.BasePath() + "/models/",
		opts:   opts,
		scrub:  newScrubber(cfg.APIKey, cfg.BaseURL),
		images: opts.Images,
	}
	if p.images == nil {
		p.images = NewImageFetches(FetchOptions{Fetcher: opts.Fetcher})
		p.ownImages = true
	}
	return p, nil
}

// Name implements Provider.
func (p *Gemini) Name() string { return p.name }

// Kind implements Provider.
func (p *Gemini) Kind() config.ProviderKind { return config.KindGemini }

// Close implements Provider.
func (p *Gemini) Close() {
	p.client.Close()
	if p.ownImages {
		p.images.Close()
	}
}

// Chat implements Provider.
func (p *Gemini) Chat(ctx context.Context, req *ChatRequest, model string) (*Result, error) {
	resp, err := p.send(ctx, req, model, sendBuffered)
	if err != nil {
		return nil, err
	}
	if !wantsImages(req) {
		return bufferedResult(resp, p.parseTextResult)
	}
	return bufferedResult(resp, p.parseResult)
}

// ChatStream implements Provider.
func (p *Gemini) ChatStream(ctx context.Context, req *ChatRequest, model string) (Stream, error) {
	if req.Forward {
		resp, err := p.send(ctx, req, model, sendForward)
		if err != nil {
			return nil, err
		}
		parse := p.parseResult
		if !wantsImages(req) {
			parse = p.parseTextResult
		}
		if st, ok, err := readSmall(p.name, resp, parse, req.ForwardDigest); ok {
			return st, err
		}
		return p.forward(resp, req), nil
	}
	resp, err := p.send(ctx, req, model, sendSSE)
	if err != nil {
		return nil, err
	}
	if req.ForwardStream {
		return p.newStreamForward(resp, resp.BodyStream(), req), nil
	}
	s := p.newStream(resp, resp.BodyStream())
	s.wantImages = wantsImages(req)
	return s, nil
}

// Prepare implements Preparer: it checks that Google's model can take req
// and downloads the images req names by URL, once for the request (another
// gemini provider failed over to finds them fetched).
func (p *Gemini) Prepare(ctx context.Context, req *ChatRequest, model string) error {
	if _, rerr := planGemini(req, model); rerr != nil {
		return p.clientError(rerr.Param, rerr.Msg)
	}
	return p.images.Fetch(ctx, req)
}

// sendMode is how an answer is read: whole (sendBuffered), as an event
// stream (sendSSE), or the non-stream answer left on the connection to be
// forwarded as it arrives (sendForward).
type sendMode uint8

const (
	sendBuffered sendMode = iota
	sendSSE
	sendForward
)

// send checks and translates req, calls Google and turns a non-200 answer
// into an *Error. The router has fetched req's images (Prepare); a caller
// that did not gets them fetched here, for this call only.
func (p *Gemini) send(ctx context.Context, req *ChatRequest, model string, mode sendMode) (*upstream.Response, error) {
	stream := mode == sendSSE
	plan, rerr := planGemini(req, model)
	if rerr != nil {
		return nil, p.clientError(rerr.Param, rerr.Msg)
	}
	if req.fetched == nil && len(pending(req)) > 0 {
		if err := p.images.Fetch(ctx, req); err != nil {
			return nil, err
		}
		defer req.ReleaseImages()
	}

	ureq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(ureq)
	ureq.Header.SetMethod(fasthttp.MethodPost)
	method := ":generateContent"
	if stream {
		method = ":streamGenerateContent?alt=sse"
		ureq.Header.Set("Accept", "text/event-stream")
	}
	ureq.SetRequestURI(p.models + url.PathEscape(model) + method)
	ureq.Header.SetContentType("application/json")
	// The key goes in a header, never in the URL: URLs end up in logs.
	ureq.Header.Set("x-goog-api-key", p.key)
	ub := getUpBody()
	ub.body = appendGeminiBodyRefs(ub.body, req, plan, &ub.refs)
	ub.set(ureq)

	resp, err := p.client.Do(ctx, ureq, mode != sendBuffered)
	// Do has written the whole request by the time it returns.
	ub.release(ureq)
	if err != nil {
		if err == upstream.ErrBodyTooLarge {
			return nil, &Error{Provider: p.name, Kind: KindInvalidResponse, Message: "upstream answer too large", Err: err}
		}
		return nil, transportError(p.name, err)
	}
	if resp.StatusCode() == fasthttp.StatusOK {
		if stream && !bytes.HasPrefix(resp.Header.ContentType(), []byte("text/event-stream")) {
			// A proxy's error page, or Google's JSON-array stream: not
			// what was asked for.
			resp.Release()
			return nil, p.invalid("upstream answered 200 without an event stream")
		}
		return resp, nil
	}
	defer resp.Release()
	if mode != sendBuffered {
		var b bytes.Buffer
		if _, err := io.Copy(&b, io.LimitReader(resp.BodyStream(), 1<<20)); err != nil {
			return nil, transportError(p.name, err)
		}
		return nil, p.statusError(resp.StatusCode(), b.Bytes())
	}
	return nil, p.statusError(resp.StatusCode(), resp.Body())
}

// clientError is a request the gateway refuses before calling Google.
func (p *Gemini) clientError(param, msg string) *Error {
	return &Error{Provider: p.name, Kind: KindClient, Status: fasthttp.StatusBadRequest, Param: param, Message: msg}
}

func (p *Gemini) invalid(msg string) *Error {
	return &Error{Provider: p.name, Kind: KindInvalidResponse, Status: fasthttp.StatusOK, Message: msg}
}

// googleError is what the gateway reads of Google's error envelope:
// {"error":{"code","message","status","details":[{"@type",...}]}}.
type googleError struct {
	code    int
	message string
	status  string // INVALID_ARGUMENT, RESOURCE_EXHAUSTED...
	reason  string // google.rpc.ErrorInfo reason, e.g. API_KEY_INVALID
	retry   time.Duration
	// hasRetry: a google.rpc.RetryInfo detail was present.
	hasRetry bool
	// daily: a google.rpc.QuotaFailure names a per-day quota, which no
	// short wait fixes.
	daily bool
}

// parseGoogleError reads Google's envelope, also wrapped in an array as
// Google's compatibility layer sends it. ok is false when body is not one.
func parseGoogleError(body []byte) (g googleError, ok bool) {
	if jsonx.KindOf(body) == jsonx.Array {
		if first, ok := jsonx.Index(body, 0); ok {
			body = first
		}
	}
	e, found := jsonx.Get(body, "error")
	if !found || jsonx.KindOf(e) != jsonx.Object {
		return g, false
	}
	jsonx.ObjectEach(e, func(k, v []byte) error {
		switch string(k) {
		case "code":
			n, _ := jsonx.Int(v)
			g.code = int(n)
		case "message":
			g.message, _ = jsonx.Unquote(v)
		case "status":
			g.status, _ = jsonx.Unquote(v)
		case "details":
			jsonx.ArrayEach(v, func(_ int, d []byte) error {
				g.detail(d)
				return nil
			})
		}
		return nil
	})
	return g, true
}

func (g *googleError) detail(d []byte) {
	t, _ := jsonx.Get(d, "@type")
	typ, _ := jsonx.Unquote(t)
	switch {
	case strings.HasSuffix(typ, "google.rpc.ErrorInfo"):
		if v, ok := jsonx.Get(d, "reason"); ok {
			g.reason, _ = jsonx.Unquote(v)
		}
	case strings.HasSuffix(typ, "google.rpc.RetryInfo"):
		if v, ok := jsonx.Get(d, "retryDelay"); ok {
			s, _ := jsonx.Unquote(v)
			g.retry, g.hasRetry = parseProtoDuration(s)
		}
	case strings.HasSuffix(typ, "google.rpc.QuotaFailure"):
		vs, _ := jsonx.Get(d, "violations")
		jsonx.ArrayEach(vs, func(_ int, v []byte) error {
			if id, ok := jsonx.Get(v, "quotaId"); ok && bytes.Contains(id, []byte("PerDay")) {
				g.daily = true
			}
			return nil
		})
	}
}

// parseProtoDuration reads a google.protobuf.Duration in JSON ("13s",
// "13.516893206s"), bounded by MaxRetryAfter.
func parseProtoDuration(s string) (time.Duration, bool) {
	v, ok := strings.CutSuffix(s, "s")
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f != f {
		return 0, false
	}
	if f == 0 {
		return 0, true
	}
	return retryDelay(f, time.Second)
}

// statusError classifies a non-200 answer (README: Errors). Google's key,
// account and model problems are the gateway's configuration, never the
// client's request, even when Google says 400.
func (p *Gemini) statusError(status int, body []byte) *Error {
	e := &Error{Provider: p.name, Status: status}
	g, _ := parseGoogleError(body)
	e.Type = g.status
	e.Message = p.scrub.clean(g.message)
	if e.Message == "" {
		e.Message = "upstream answered HTTP " + strconv.Itoa(status)
	}
	switch {
	case status == fasthttp.StatusTooManyRequests:
		// A per-minute quota says how long to wait. Prepaid credit at zero
		// or a daily quota says nothing useful and lasts hours: an outage
		// of this provider rather than a pause.
		e.RetryAfter = g.retry
		e.Kind = KindConfig
		if g.hasRetry && !g.daily {
			e.Kind = KindRateLimited
		}
	case status >= 500:
		e.Kind = KindServer
	case status == fasthttp.StatusUnauthorized, status == fasthttp.StatusForbidden, status == fasthttp.StatusNotFound:
		e.Kind = KindConfig
	case status == fasthttp.StatusBadRequest && googleConfigProblem(g):
		e.Kind = KindConfig
	case status == fasthttp.StatusRequestTimeout:
		e.Kind = KindTimeout
	case status >= 400:
		e.Kind = KindClient
	default:
		e.Kind = KindInvalidResponse
	}
	return e
}

// googleConfigProblem tells a 400 caused by the gateway's key or account
// (a wrong or expired key, a region or plan Google does not serve) from one
// caused by the request.
func googleConfigProblem(g googleError) bool {
	return strings.HasPrefix(g.reason, "API_KEY_") ||
		g.status == "FAILED_PRECONDITION" ||
		strings.Contains(g.message, "API key")
}
