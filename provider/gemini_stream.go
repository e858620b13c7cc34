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
//
// This reading holds each event whole, its image included; the forwarding
// one (gemini_stream_forward.go) hands the same events on with images in
// windows. What they share, and so decide alike, is streamTally.
type geminiStream struct {
	eventStream
	streamTally
	imgs []Image // backing of the queue's Image pointers
	done bool
}

// streamTally is what a Gemini stream keeps from one event to the next:
// what each choice has shown (for the notice at its finish), the images,
// the last usageMetadata (each event carries the running totals).
type streamTally struct {
	p    *Gemini
	note []byte // backing of notice texts, reset with each upstream event

	images   [MaxN]int
	texts    [MaxN]bool
	finished bool
	usage    geminiUsage
	hasUsage bool
	total    int // images over all choices
	// wantImages: the request asked for images (not text only).
	wantImages bool
}

func (p *Gemini) newStream(resp *upstream.Response, body io.Reader) *geminiStream {
	return &geminiStream{streamTally: streamTally{p: p, wantImages: true},
		eventStream: eventStream{resp: resp, sse: getSSEReader(body, p.opts.MaxBodyBytes)}}
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
			if s.queue, err = s.end(s.queue); err != nil {
				return nil, err
			}
			s.done = true
			continue
		}
		if err != nil {
			return nil, s.readError(err)
		}
		if err := s.event(data); err != nil {
			return nil, err
		}
	}
}

// end queues what ends the stream at the end of its body: the usage. A
// body that ended before a finish reason was cut.
func (t *streamTally) end(q []Event) ([]Event, error) {
	if !t.finished {
		return q, &Error{Provider: t.p.name, Kind: KindTransport, Message: "upstream stream ended before its finish reason"}
	}
	if t.hasUsage {
		u := t.usage.neutral(t.total, t.p.opts.TokensPerImage)
		q = append(q, Event{Usage: &u})
	}
	return q, nil
}

// readError is the failure of a read of the stream's body.
func (t *streamTally) readError(err error) error {
	switch {
	case errors.Is(err, ErrEventTooLarge):
		return t.p.invalid("upstream stream event too large")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return t.cut(io.ErrUnexpectedEOF)
	}
	return transportError(t.p.name, err)
}

// cut is the failure of a stream whose body ended inside an event.
func (t *streamTally) cut(err error) error {
	return &Error{Provider: t.p.name, Kind: KindTransport, Message: "upstream stream was cut", Err: err}
}

// checkEvent judges an event's data as JSON: nil for one object, a cut
// stream when the data ends inside it, else an invalid answer.
func (t *streamTally) checkEvent(data []byte) error {
	if jsonx.KindOf(data) != jsonx.Object {
		return t.p.invalid("upstream stream event is not JSON")
	}
	if end, err := jsonx.SkipValue(data, 0); err != nil || jsonx.SkipWS(data, end) != len(data) {
		var se *jsonx.SyntaxError
		if errors.As(err, &se) && se.Offset >= len(data) {
			// The body ended inside the event: a cut connection.
			return t.cut(err)
		}
		return t.p.invalid("upstream stream event is not JSON")
	}
	return nil
}

// event queues the neutral events of one SSE event.
func (s *geminiStream) event(data []byte) error {
	if err := s.checkEvent(data); err != nil {
		return err
	}
	a := readAnswer(data)
	if a.err != nil {
		return s.p.streamError(data)
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
	s.queue = s.answerEnd(s.queue, a, pos)
	return nil
}

// answerEnd queues what the top level of an event with pos candidates
// says: a blocked prompt; and keeps its usage.
func (t *streamTally) answerEnd(q []Event, a geminiAnswer, pos int) []Event {
	if pos == 0 && a.blockReason != "" {
		start := len(t.note)
		t.note = appendNotice(t.note, false, blockedNotice, a.blockReason, a.blockMsg)
		q = append(q,
			Event{Text: t.note[start:len(t.note):len(t.note)], Refusal: true},
			Event{FinishReason: "content_filter"})
		t.finished = true
	}
	if a.usage != nil {
		t.usage, t.hasUsage = readGeminiUsage(a.usage), true
	}
	return q
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
	s.queue = s.finish(s.queue, c, gc)
	return nil
}

// finish queues the end of choice c if candidate gc, its part of the
// event, has a finish reason: a notice when it made no image, then the
// reason.
func (t *streamTally) finish(q []Event, c int, gc geminiCandidate) []Event {
	if gc.finish == "" {
		return q
	}
	hasImage := t.images[c] > 0
	finish := geminiFinish(gc.finish, hasImage)
	if needsNotice(gc.finish, hasImage, t.texts[c], t.wantImages) {
		start := len(t.note)
		t.note = appendNotice(t.note, t.texts[c], noticeFor(t.wantImages), gc.finish, gc.finishMsg)
		q = append(q, Event{Choice: c, Text: t.note[start:len(t.note):len(t.note)], Refusal: finish == "content_filter"})
		t.texts[c] = true
	}
	t.finished = true
	return append(q, Event{Choice: c, FinishReason: finish})
}

// streamError turns an error object sent as an event into an *Error, classed
// by the HTTP status it names.
func (p *Gemini) streamError(data []byte) error {
	g, _ := parseGoogleError(data)
	status := g.code
	if status < 400 {
		status = fasthttp.StatusInternalServerError
	}
	e := p.statusError(status, data)
	if e.Kind == KindClient {
		// The stream was accepted: what failed is the provider, mid-way.
		e.Kind = KindServer
	}
	return e
}
