package gateway

import (
	"context"
	"io"

	"go.uber.org/zap"

	"nanogate/images"
	"nanogate/provider"
	"nanogate/router"
	"nanogate/telemetry"
)

// Forwarding: a non-stream chat answer goes to the client as it arrives
// from the upstream instead of after it was read whole, so that an answer
// in flight holds a window of its image rather than the image (thousands of
// image generations take seconds each, all at once). The provider reads the
// answer ahead to its first image's header and a first window before the
// router hands it over, so failover works as for a buffered answer until
// then (provider.ChatRequest.Forward). After that the answer is committed:
// a failure ends it with an error the client's JSON parser sees, and is
// billed as a failure when no image was completed, else for what was.
//
// Answers of n > 1 stay buffered: their choices come from separate calls.
//
// Images that become links (offload) are forwarded too, into the store
// instead of to the client: their base64 windows are decoded into the
// store's spool as they arrive (images.ImageWriter), and at the image's end
// the answer goes on with the link, as a buffered answer renders it. A store
// that fails (at the commit or mid-image) costs the client nothing: the
// spool still holds the image, and it goes out inline from there, as the
// buffered path falls back to the inline base64.
//
// With offload nothing reaches the client before the images are stored:
// the renderer holds the answer's start until its first inline window, and
// an answer of links goes out whole, with a Content-Length. So an upstream
// that breaks mid-image is answered with an error status rather than a cut
// body. Failover to another provider still ends where the provider commits
// the answer (the first window of its first image), as for an image
// forwarded inline: past it the image may be generated and billed upstream.
// The bill is the same too: a failure that costs nothing when no image was
// completed, else the images completed (an answer of two whose second image
// broke bills one, although its client got an error status, as a cut body
// did).

// Forwards reports whether call's non-stream answer may be forwarded as
// it arrives (ChatForward) rather than read whole (Chat).
func (g *Gateway) Forwards(call *Call) bool {
	return call.Req.N <= 1
}

// ChatForward runs a non-stream chat request whose answer is forwarded as
// it arrives. The answer must be closed (it bills the call), then the call,
// whatever the outcome.
func (g *Gateway) ChatForward(ctx context.Context, call *Call) (*ForwardAnswer, router.Served, error) {
	if err := g.admit(ctx, call); err != nil {
		return nil, router.Served{}, err
	}
	call.Req.Forward, call.Req.ForwardDigest = true, g.sigs != nil && g.mayBeSigned(call.Req.Model)
	st, first, served, err := g.router.ChatStream(ctx, call.Req)
	if err != nil {
		call.fail(served, err)
		return nil, served, err
	}
	if res, ok := provider.Whole(st); ok {
		return &ForwardAnswer{Served: served, Whole: g.answered(ctx, call, res, served), closed: true}, served, nil
	}
	return &ForwardAnswer{Served: served, call: call, g: g, stream: st, first: first, ctx: ctx,
		caps: g.capsFor(call.Req), offload: g.Offloads(call)}, served, nil
}

// ForwardAnswer is a committed non-stream answer being forwarded. Next
// hands its events on (provider.Event, images in pieces) with the journey
// applied: images counted, their signatures kept as they end.
type ForwardAnswer struct {
	Served router.Served
	// Whole is set when the provider had read the answer whole before it
	// was handed over (no image in it, or images that fit its first
	// window): it is answered as Chat's are, already billed on the call,
	// and the rest of ForwardAnswer is unused.
	Whole  *Answer
	call   *Call
	g      *Gateway
	stream provider.Stream
	first  *provider.Event
	ctx    context.Context
	caps   usageCaps
	images int
	up     provider.Usage
	err    error
	closed bool
	// ended: the upstream answer is over (whole or broken); its bill is
	// then computed once (bill counts the clamps it makes).
	ended  bool
	billed Usage

	// offload: images go into the store (see the top of the file). img is
	// the image being stored, of type mime; held is its end, handed out
	// after its link, or after its inline base64 (img not nil then) when
	// the store refused it; link is the link of the image whose end comes
	// next ("" when inline), its signature's second key. made and piece
	// are the events made here.
	offload bool
	img     *images.ImageWriter
	mime    string
	held    *provider.Event
	link    string
	made    provider.Event
	piece   provider.ImagePiece
}

// Next returns the next event, io.EOF at the end. An event's spans are
// valid until the next call.
func (a *ForwardAnswer) Next() (*provider.Event, error) {
	ev, err := a.next()
	if err != nil {
		if err != io.EOF {
			a.err = err
		}
		a.closeImage()
		a.end()
		return nil, err
	}
	switch {
	case ev.Usage != nil:
		a.up = *ev.Usage
	case ev.Piece != nil && ev.Piece.Step == provider.ImageEnd:
		a.images++
		a.g.imageForwarded(a.ctx, a.call.Req.Model, ev.Piece, a.link)
		a.link = ""
	}
	return ev, nil
}

// next is the upstream's next event or, for a caller whose images are
// stored, the events that stand for them.
func (a *ForwardAnswer) next() (*provider.Event, error) {
	if a.held != nil {
		if a.img != nil {
			b, err := a.img.Inline()
			if err == nil {
				return a.emit(a.held.Choice, provider.ImagePiece{Step: provider.ImageData, Data: b}), nil
			}
			a.closeImage()
			if err != io.EOF {
				a.held = nil
				return nil, err
			}
		}
		ev := a.held
		a.held = nil
		return ev, nil
	}
	for {
		ev, err := a.upstream()
		if err != nil || !a.offload || ev.Piece == nil {
			return ev, err
		}
		if ev, err = a.store(ev); ev != nil || err != nil {
			return ev, err
		}
	}
}

// upstream is the upstream's next event.
func (a *ForwardAnswer) upstream() (*provider.Event, error) {
	if ev := a.first; ev != nil {
		a.first = nil
		return ev, nil
	}
	return a.stream.Next()
}

// store takes a piece of an image that becomes a link: nil while the image
// goes into the store, and at its end the image's start (its link, or its
// type when the store refused it), its end held for later. An image that
// cannot be stored from the start (a type that is not offloaded, no spool)
// is handed on as it is, inline.
func (a *ForwardAnswer) store(ev *provider.Event) (*provider.Event, error) {
	p := ev.Piece
	switch p.Step {
	case provider.ImageBegin:
		if p.URL != "" {
			img := provider.Image{MIME: p.MIME, URL: p.URL}
			a.g.copyHosted(a.ctx, &img)
			a.link = img.URL
			return a.emit(ev.Choice, provider.ImagePiece{Step: provider.ImageBegin, MIME: img.MIME, URL: img.URL}), nil
		}
		w, err := a.g.offload.Begin(p.MIME)
		if err != nil {
			a.g.offloadFailed(err)
			return ev, nil
		}
		a.img, a.mime = w, p.MIME
		return nil, nil
	case provider.ImageData:
		if a.img == nil {
			return ev, nil
		}
		return nil, a.img.Write(p.Data)
	}
	if a.img == nil {
		return ev, nil
	}
	a.held = ev
	ctx, end := telemetry.Span(a.ctx, "image offload")
	link, err := a.img.Commit(ctx)
	end(nil)
	if err != nil {
		a.g.offloadFailed(err)
		return a.emit(ev.Choice, provider.ImagePiece{Step: provider.ImageBegin, MIME: a.mime}), nil
	}
	a.closeImage()
	a.link = link
	return a.emit(ev.Choice, provider.ImagePiece{Step: provider.ImageBegin, MIME: a.mime, URL: link}), nil
}

// emit returns an event of the answer's own holding piece p, valid until
// the next call.
func (a *ForwardAnswer) emit(choice int, p provider.ImagePiece) *provider.Event {
	a.piece = p
	a.made = provider.Event{Choice: choice, Piece: &a.piece}
	return &a.made
}

// closeImage closes the image being stored, if any: its spool is removed
// unless it became the stored image.
func (a *ForwardAnswer) closeImage() {
	if a.img != nil {
		a.img.Close()
		a.img = nil
	}
}

// Head is the upstream's id and creation time, when it gave them before
// the answer was committed ("" and 0 otherwise).
func (a *ForwardAnswer) Head() (string, int64) {
	if h, ok := a.stream.(provider.Head); ok {
		return h.Head()
	}
	return "", 0
}

// Usage is what the answer has used so far: the images completed, and the
// upstream's reported tokens, clamped.
func (a *ForwardAnswer) Usage() Usage {
	if a.ended {
		return a.billed
	}
	return a.g.bill(a.caps, a.Served.Provider, a.up, a.images)
}

// end notes that the upstream answer is over and bills it.
func (a *ForwardAnswer) end() {
	if !a.ended {
		a.billed, a.ended = a.g.bill(a.caps, a.Served.Provider, a.up, a.images), true
	}
}

// PromptImageTokens is the upstream's count of input image tokens.
func (a *ForwardAnswer) PromptImageTokens() int64 { return a.up.PromptImageTokens }

// Close ends the upstream call and leaves the answer's bill on the call:
// the images completed and the tokens reported, or, for an answer that
// broke before any image was complete, a failure that costs nothing. Safe
// to call twice.
func (a *ForwardAnswer) Close() {
	if a.closed {
		return
	}
	a.closed = true
	a.closeImage()
	a.stream.Close()
	a.end()
	if a.err != nil && a.images == 0 {
		a.call.fail(a.Served, a.err)
		return
	}
	a.call.succeed(a.Served, a.Usage())
}

// mayBeSigned reports whether images of the public model may carry a
// thoughtSignature: the digest a forwarded image needs for it (decoding
// and hashing megabytes as they pass) is spent only then.
func (g *Gateway) mayBeSigned(model string) bool {
	m := g.Model(model)
	return m == nil || m.SignsImages()
}

// unexpectedSignature logs, once per model, a signature on an image of a
// model the catalogue says signs none: it cannot be kept (the image was not
// digested), and the catalogue's image_signatures should say so.
func (g *Gateway) unexpectedSignature(model string) {
	if _, logged := g.unsignedWarned.LoadOrStore(model, true); !logged {
		g.log.Warn("a model the catalogue says puts no thoughtSignature on its images signed one; it is not kept "+
			"(set image_signatures in the catalogue; logged once per model)", zap.String("model", model))
	}
}
