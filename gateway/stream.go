package gateway

import (
	"context"

	"nanogate/provider"
	"nanogate/router"
)

// StreamAnswer is an open stream whose first event has arrived. Next hands
// its events on with the journey applied (images stored and their
// signatures kept as they pass); Close ends it and leaves its bill on the
// call.
type StreamAnswer struct {
	Served router.Served
	call   *Call
	g      *Gateway
	stream provider.Stream
	first  *provider.Event
	// offload: images are replaced by links as they pass.
	offload bool
	ctx     context.Context
	caps    usageCaps
	images  int
	up      provider.Usage
	closed  bool
}

func (g *Gateway) newStreamAnswer(ctx context.Context, call *Call, st provider.Stream, first *provider.Event, served router.Served) *StreamAnswer {
	return &StreamAnswer{Served: served, call: call, g: g, stream: st, first: first,
		offload: g.offloads(call.Caller), ctx: ctx, caps: g.capsFor(call.Req)}
}

// Next returns the next event, io.EOF at the end. An event's spans are
// valid until the next call.
func (s *StreamAnswer) Next() (*provider.Event, error) {
	ev := s.first
	if ev != nil {
		s.first = nil
	} else {
		var err error
		if ev, err = s.stream.Next(); err != nil {
			return nil, err
		}
	}
	switch {
	case ev.Usage != nil:
		s.up = *ev.Usage
	case ev.Image != nil:
		s.images++
		if s.offload && ev.Image.URL == "" {
			s.g.offloadImage(s.ctx, ev.Image)
		}
		s.g.keepSignature(s.ctx, ev.Image)
	case ev.Piece != nil && ev.Piece.Step == provider.ImageEnd:
		s.images++
		s.g.imageForwarded(s.ctx, s.call.Req.Model, ev.Piece, "")
	}
	return ev, nil
}

// imageForwarded keeps the signature of an image handed on in windows,
// once it has ended: by its digest, when it was digested, and by link,
// the one it was stored under ("" for none).
func (g *Gateway) imageForwarded(ctx context.Context, model string, p *provider.ImagePiece, link string) {
	if p.Digested {
		g.putSignature(ctx, p.Digest, link, p.Signature)
	} else if len(p.Signature) > 0 && g.sigs != nil {
		g.unexpectedSignature(model)
	}
}

// Usage is what the stream has used so far: every image it passed, and the
// upstream's reported tokens, clamped.
func (s *StreamAnswer) Usage() Usage {
	return s.g.bill(s.caps, s.Served.Provider, s.up, s.images)
}

// PromptImageTokens is the upstream's count of input image tokens (0 until
// its usage arrives), for the usage chunk.
func (s *StreamAnswer) PromptImageTokens() int64 { return s.up.PromptImageTokens }

// Close ends the upstream stream and bills what it made on the call, which
// records it when the call is closed. A stream cut mid-way still bills what
// went out. Safe to call twice.
func (s *StreamAnswer) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.stream.Close()
	s.call.succeed(s.Served, s.Usage())
}
