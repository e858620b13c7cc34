package provider

import (
	"errors"
	"io"

	"github.com/valyala/fasthttp"

	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// geminiStream translates :streamGenerateContent?alt=sse events into neutral
// events as they arrive. Each event is a whole generateContent answer with
// the parts generated since the previous one; the image comes whole in one
// event, on one line of megabytes, often with the finishReason. There is no
// [DONE]: the body ends after the last event, and a body that ends before a
// finishReason was cut.
type geminiStream struct {
	eventStream
	p    *Gemini
	imgs []Image // backing of the queue's Image pointers
	note []byte  // backing of notice texts

	images   [MaxN]int
	texts    [MaxN]bool
	finished bool
	usage    geminiUsage
	hasUsage bool
	total    int // images over all choices
	done     bool
	// wantImages: the request asked for images (not text only).
	wantImages bool
}

func (p *Gemini) newStream(resp *upstream.Response, body io.Reader) *geminiStream {
	return &geminiStream{p: p, wantImages: true, eventStream: eventStream{resp: resp, sse: getSSEReader(body, p.opts.MaxBodyBytes)}}
}

// Next implements Stream.
func (s *geminiStream) Next() (*Event, error) {
	for {
		if ev := s.pop(); ev != nil {
			return ev, nil
		}
		if s.done || s.sse == nil {
			return nil, io.EOF
		}
		s.imgs, s.note = s.imgs[:0], s.note[:0]
		data, err := s.sse.Next()
		if err == io.EOF {
			if !s.finished {
				return nil, &Error{Provider: s.p.name, Kind: KindTransport, Message: "upstream stream ended before its finish reason"}
			}
			s.done = true
			if s.hasUsage {
				u := s.usage.neutral(s.total, s.p.opts.TokensPerImage)
				s.queue = append(s.queue, Event{Usage: &u})
			}
			continue
		}
		if err != nil {
			if err == ErrEventTooLarge {
				return nil, s.p.invalid("upstream stream event too large")
			}
			if err == io.ErrUnexpectedEOF {
				return nil, &Error{Provider: s.p.name, Kind: KindTransport, Message: "upstream stream was cut", Err: err}
			}
			return nil, transportError(s.p.name, err)
		}
		if err := s.event(data); err != nil {
			return nil, err
		}
	}
}

// event queues the neutral events of one SSE event.
func (s *geminiStream) event(data []byte) error {
	if jsonx.KindOf(data) != jsonx.Object {
		return s.p.invalid("upstream stream event is not JSON")
	}
	if end, err := jsonx.SkipValue(data, 0); err != nil || jsonx.SkipWS(data, end) != len(data) {
		var se *jsonx.SyntaxError
		if errors.As(err, &se) && se.Offset >= len(data) {
			// The body ended inside the event: a cut connection.
			return &Error{Provider: s.p.name, Kind: KindTransport, Message: "upstream stream was cut", Err: err}
		}
		return s.p.invalid("upstream stream event is not JSON")
	}
	a := readAnswer(data)
	if a.err != nil {
		return s.streamError(data)
	}
	var err error
	pos := 0
	vElems(a.candidates, func(c []byte) {
		if err == nil {
			err = s.candidate(readCandidate(c, pos))
		}
		pos++
	})
	if err != nil {
		return err
	}
	if pos == 0 && a.blockReason != "" {
		start := len(s.note)
		s.note = appendNotice(s.note, false, blockedNotice, a.blockReason, a.blockMsg)
		s.queue = append(s.queue,
			Event{Text: s.note[start:len(s.note):len(s.note)], Refusal: true},
			Event{FinishReason: "content_filter"})
		s.finished = true
	}
	if a.usage != nil {
		s.usage, s.hasUsage = readGeminiUsage(a.usage), true
	}
	return nil
}

// candidate queues the text and image events of one candidate's new parts,
// then its finish reason if it has one.
func (s *geminiStream) candidate(gc geminiCandidate) error {
	c := gc.index
	if c < 0 || c >= MaxN {
		return s.p.invalid("upstream candidate index out of range")
	}
	bad := false
	vElems(gc.parts, func(v []byte) {
		part, ok, isBad := readPart(v)
		bad = bad || isBad
		switch {
		case !ok:
		case part.isImg:
			s.imgs = append(s.imgs, part.image)
			// Pointers into imgs stay valid if it grows: the old array
			// lives on, unchanged, for the events already queued.
			s.queue = append(s.queue, Event{Choice: c, Image: &s.imgs[len(s.imgs)-1]})
			s.images[c]++
			s.total++
		case len(part.text) > 0:
			s.queue = append(s.queue, Event{Choice: c, Text: part.text})
			s.texts[c] = true
		}
	})
	if bad {
		return s.p.invalid("upstream image is not valid base64")
	}
	if gc.finish == "" {
		return nil
	}
	hasImage := s.images[c] > 0
	finish := geminiFinish(gc.finish, hasImage)
	if needsNotice(gc.finish, hasImage, s.texts[c], s.wantImages) {
		start := len(s.note)
		s.note = appendNotice(s.note, s.texts[c], noticeFor(s.wantImages), gc.finish, gc.finishMsg)
		s.queue = append(s.queue, Event{Choice: c, Text: s.note[start:len(s.note):len(s.note)], Refusal: finish == "content_filter"})
		s.texts[c] = true
	}
	s.queue = append(s.queue, Event{Choice: c, FinishReason: finish})
	s.finished = true
	return nil
}

// streamError turns an error object sent as an event into an *Error, classed
// by the HTTP status it names.
func (s *geminiStream) streamError(data []byte) error {
	g, _ := parseGoogleError(data)
	status := g.code
	if status < 400 {
		status = fasthttp.StatusInternalServerError
	}
	e := s.p.statusError(status, data)
	if e.Kind == KindClient {
		// The stream was accepted: what failed is the provider, mid-way.
		e.Kind = KindServer
	}
	return e
}
