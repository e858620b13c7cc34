package gateway

import (
	"context"
	"errors"

	"nanogate/internal/jsonx"
	"nanogate/internal/safemath"
	"nanogate/provider"
	"nanogate/router"
)

// ErrContentPolicy: the model refused to draw (NO_IMAGE, safety, a blocked
// prompt) for every image asked.
var ErrContentPolicy = errors.New("the model returned no image")

// ContentPolicyError carries the model's reason.
type ContentPolicyError struct{ Reason string }

// Error returns the model's reason.
func (e *ContentPolicyError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrContentPolicy) true.
func (e *ContentPolicyError) Is(target error) bool { return target == ErrContentPolicy }

// ImagesAnswer is the outcome of an Images API request.
type ImagesAnswer struct {
	// Images produced, in the order of the upstream calls; each has URL set
	// when a link was asked for and the store took it.
	Images []provider.Image
	// Usage sums the calls that produced something.
	Usage Usage
	// Served lists the provider of each successful call.
	Served  []router.Served
	results []*provider.Result
}

// Release frees the upstream buffers behind the images.
func (a *ImagesAnswer) Release() {
	for _, r := range a.results {
		r.Release()
	}
	a.results = nil
}

// PromptImageTokens sums the upstreams' counts of input image tokens, each
// at least 0.
func (a *ImagesAnswer) PromptImageTokens() int64 {
	var n int64
	for _, r := range a.results {
		n = safemath.Add(n, max(r.Usage.PromptImageTokens, 0))
	}
	return n
}

// Provider names the providers that served, for the response header.
func (a *ImagesAnswer) Provider() string {
	name := ""
	for _, s := range a.Served {
		if name == "" {
			name = s.Provider
		} else if name != s.Provider {
			return name + "," + s.Provider
		}
	}
	return name
}

// Images runs an Images API request: n upstream calls of call.Req at once
// (Gemini answers one image per call), each routed and failed over on its
// own, admitted and limited as one request of n images. It fails only when
// no call produced an image. Every upstream call is recorded when the call
// closes; the answer's images must be released.
func (g *Gateway) Images(ctx context.Context, call *Call, n int, links bool) (*ImagesAnswer, error) {
	call.images = n
	if err := g.admit(ctx, call); err != nil {
		return nil, err
	}
	type outcome struct {
		res    *provider.Result
		served router.Served
		err    error
	}
	outs := make([]outcome, n)
	inParallel(n, func(i int) {
		res, served, err := g.router.Chat(ctx, call.Req)
		outs[i] = outcome{res, served, err}
	})

	ans := &ImagesAnswer{}
	var lastErr error
	var refusal string
	for i, o := range outs {
		// One record per upstream call; the first, under the request's
		// id, settles the budget reservation made under it.
		rec := call
		if i > 0 {
			rec = call.sub(i + 1)
		}
		if o.err != nil {
			lastErr = o.err
			rec.fail(o.served, o.err)
			continue
		}
		g.keepSignatures(ctx, o.res)
		if links {
			g.offloadImages(ctx, o.res)
		}
		u := g.bill(g.capsFor(call.Req), o.served.Provider, o.res.Usage, o.res.Images())
		if r := ans.add(o.res, o.served, u); refusal == "" {
			refusal = r
		}
		rec.succeed(o.served, u)
	}
	return ans.settle(refusal, lastErr)
}

// offloadImages stores res's images as links for a request that asked
// for links.
func (g *Gateway) offloadImages(ctx context.Context, res *provider.Result) {
	if g.offload == nil {
		g.log.Warn("image link asked but no image store is set up; answering with base64")
		return
	}
	for ci := range res.Choices {
		for j := range res.Choices[ci].Images {
			g.offloadImage(ctx, &res.Choices[ci].Images[j])
		}
	}
}

// add takes the images of one upstream answer (its buffers with them) and
// returns the reason of its safety block, if it made no image for one.
func (a *ImagesAnswer) add(res *provider.Result, served router.Served, u Usage) (refusal string) {
	for ci := range res.Choices {
		c := &res.Choices[ci]
		if len(c.Images) == 0 && c.FinishReason == "content_filter" && refusal == "" {
			refusal = unescape(c.Text)
		}
		a.Images = append(a.Images, c.Images...)
	}
	a.results = append(a.results, res)
	a.Served = append(a.Served, served)
	a.Usage = addUsage(a.Usage, u)
	return refusal
}

// settle returns the answer when it holds an image, else (released) the
// error that says why none came.
func (a *ImagesAnswer) settle(refusal string, lastErr error) (*ImagesAnswer, error) {
	if len(a.Images) > 0 {
		return a, nil
	}
	a.Release()
	switch {
	case refusal != "":
		return nil, &ContentPolicyError{Reason: refusal}
	case lastErr != nil:
		return nil, lastErr
	}
	return nil, &provider.Error{Provider: "all", Kind: provider.KindInvalidResponse, Message: "no image was returned"}
}

// ImagesForward runs an Images API request for one image whose answer is
// forwarded as it arrives (ChatForward), its image a link when links.
// A ForwardAnswer's Whole answer becomes an ImagesAnswer with ImagesOf.
func (g *Gateway) ImagesForward(ctx context.Context, call *Call, links bool) (*ForwardAnswer, router.Served, error) {
	call.images = 1
	call.SetLinks(links)
	if links && g.offload == nil {
		g.log.Warn("image link asked but no image store is set up; answering with base64")
	}
	return g.ChatForward(ctx, call)
}

// SetLinks says whether the call's images become links whatever its
// caller's setting: the Images API's response_format.
func (c *Call) SetLinks(links bool) { c.links = &links }

// ImagesOf is the Images API answer of a whole answer of ImagesForward
// (billed already), or the error that says why it holds no image.
func ImagesOf(ans *Answer) (*ImagesAnswer, error) {
	a := &ImagesAnswer{}
	refusal := a.add(ans.Result, ans.Served, ans.Usage)
	return a.settle(refusal, nil)
}

func addUsage(a, b Usage) Usage {
	a.PromptTokens = safemath.Add(a.PromptTokens, b.PromptTokens)
	a.TextTokens = safemath.Add(a.TextTokens, b.TextTokens)
	a.Images = safemath.Add(a.Images, b.Images)
	a.ImageTokens = safemath.Add(a.ImageTokens, b.ImageTokens)
	a.CompletionTokens = safemath.Add(a.CompletionTokens, b.CompletionTokens)
	a.TotalTokens = safemath.Add(a.TotalTokens, b.TotalTokens)
	return a
}

// unescape turns JSON-escaped string content into text.
func unescape(esc []byte) string {
	q := make([]byte, 0, len(esc)+2)
	q = append(append(append(q, '"'), esc...), '"')
	s, err := jsonx.Unquote(q)
	if err != nil {
		return string(esc)
	}
	return s
}
