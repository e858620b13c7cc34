package provider

import (
	"errors"
	"io"

	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// Forwarding a Gemini event stream (ChatRequest.ForwardStream).
//
// Google sends each image of a stream as one event of megabytes on one
// line. Read as geminiStream reads it, a stream in flight holds the whole
// event; forwarded, it holds a window. The SSE reader hands each event's
// data out as a reader (sseReader.NextReader), and the walker of a
// forwarded answer (forward.go) walks it as it walks a generateContent
// answer (gemini_forward.go): an image's base64 is checked in one pass
// (string end, \/, alphabet and padding, its header with
// checkOutputImage) and handed out window by window, the rest kept in a
// skeleton. When the event's JSON ends, the walk starts again on the next
// event.
//
// The events handed out are those geminiStream hands out for the same
// stream, images as Event.Piece steps instead of Event.Image: text parts,
// finish reasons and notices are read from the skeleton by the same
// functions (readPart, readCandidate, readAnswer and streamTally), so the
// same text splits, notices and usage follow. The events of one upstream
// event are held until it ends, as geminiStream holds them, unless an
// image in it is large enough to be handed on as it arrives: the first
// event handed out is what the router reads before it commits, so a
// stream failing before that (an error status, garbage, an image refused
// on its header) still fails over. After it, a failure ends the stream
// with an error.
//
// Limits, beyond those of gemini_forward.go: an image's choice is the
// position of its candidate in the event, so a candidate whose index,
// read after its image, says otherwise is refused (Google numbers its
// candidates in order, and a forwarded request asks for one); and an
// event that breaks after an image of it was handed on has handed on
// what came before the break.
type geminiStreamForward struct {
	geminiForward
	tally streamTally
	sse   *sseReader
	// ev is the data of the current event; the walker reads it through
	// eventBody.
	ev     io.Reader
	mapped bool // err was turned into the stream's terms
}

// errEventCut is what eventBody reads when its event ended inside the JSON.
var errEventCut = errors.New("event ended inside its JSON")

// eventBody is the body the walker reads: the current event's data. Its
// end is the end of the body only once the walker has read a whole value;
// before that, the event was cut.
type eventBody struct{ s *geminiStreamForward }

// Read implements io.Reader.
func (b eventBody) Read(p []byte) (int, error) {
	n, err := b.s.ev.Read(p)
	if err == io.EOF && b.s.st != stEnd {
		err = errEventCut
	}
	return n, err
}

// newStreamForward reads body (resp's, or any reader in tests) as the
// event stream answering req.
func (p *Gemini) newStreamForward(resp *upstream.Response, body io.Reader, req *ChatRequest) *geminiStreamForward {
	s := &geminiStreamForward{
		geminiForward: geminiForward{p: p, wantImages: wantsImages(req), digest: req.ForwardDigest},
		tally:         streamTally{p: p, wantImages: wantsImages(req)},
		sse:           getSSEReader(body, p.opts.MaxBodyBytes),
	}
	s.init(s, p.name, resp, eventBody{s}, p.opts.MaxBodyBytes)
	s.st = stKind // the first step opens the first event
	return s
}

// Next implements Stream.
func (s *geminiStreamForward) Next() (*Event, error) {
	ev, err := s.forwardWalk.Next()
	if err != nil && err != io.EOF && !s.mapped {
		s.err, s.mapped = s.streamErr(err), true
		err = s.err
	}
	return ev, err
}

// streamErr turns a failed read of the walk into geminiStream's failure.
func (s *geminiStreamForward) streamErr(err error) error {
	if errors.Is(err, errEventCut) {
		// Judged on the skeleton as geminiStream judges the data: the
		// images emptied change nothing of where the JSON breaks.
		if e := s.tally.checkEvent(s.skel); e != nil {
			return e
		}
		return s.tally.cut(err)
	}
	if errors.Is(err, ErrEventTooLarge) || errors.Is(err, io.ErrUnexpectedEOF) {
		return s.tally.readError(err)
	}
	return err
}

// Close implements Stream.
func (s *geminiStreamForward) Close() {
	s.forwardWalk.Close()
	if s.sse != nil {
		putSSEReader(s.sse)
		s.sse, s.ev = nil, nil
	}
}

// onStep implements forwardKind: between two events, it opens the next
// one and starts the walk over, or ends the stream.
func (s *geminiStreamForward) onStep() {
	ev, err := s.sse.NextReader()
	if err == io.EOF {
		if s.queue, err = s.tally.end(s.queue); err != nil {
			s.fail(err)
			return
		}
		s.done = true
		return
	}
	if err != nil {
		s.fail(s.tally.readError(err))
		return
	}
	// The events of the last upstream event were all handed out: what
	// they pointed into is reused.
	s.ev = ev
	s.skel, s.stack, s.st, s.read, s.committed = s.skel[:0], s.stack[:0], stValue, 0, false
	s.pos, s.texts, s.tally.note = 0, s.texts[:0], s.tally.note[:0]
}

// onValue implements forwardKind.
func (s *geminiStreamForward) onValue(c byte) bool {
	switch {
	case len(s.stack) == 0 && c != '{':
		s.fail(s.p.invalid("upstream stream event is not JSON"))
		return true
	case c != '{' && s.at(pathCandidate):
		s.pos++ // not a candidate, but counted as geminiStream counts it
	}
	return s.geminiForward.onValue(c)
}

// onClose implements forwardKind.
func (s *geminiStreamForward) onClose() {
	switch {
	case s.at(pathPart):
		s.partClosed()
	case s.at(pathCandidate):
		s.candidateClosed()
	}
}

// candidateClosed queues the end of the candidate that just closed: its
// text parts if no image came to place them, its finish reason.
func (s *geminiStreamForward) candidateClosed() {
	b := s.skel[s.candStart:]
	if !jsonx.Valid(b) {
		s.fail(s.p.invalid("upstream stream event is not JSON"))
		return
	}
	pos := s.pos
	s.pos++
	gc := readCandidate(b, pos)
	c := gc.index
	switch {
	case c < 0 || c >= MaxN:
		s.fail(s.p.invalid("upstream candidate index out of range"))
		return
	case s.candImages > 0 && c != pos:
		s.fail(s.p.invalid("upstream candidate index does not follow its images"))
		return
	}
	for _, t := range s.texts {
		t.Choice = c
		s.emit(t)
	}
	s.texts = s.texts[:0]
	vElems(gc.parts, func(v []byte) {
		if part, ok, _ := readPart(v); ok && !part.isImg && len(part.text) > 0 {
			s.tally.texts[c] = true
		}
	})
	s.tally.images[c] += s.candImages
	s.tally.total += s.candImages
	s.queue = s.tally.finish(s.queue, c, gc)
}

// onEnd implements forwardKind: the event's JSON ended. Its events are
// handed out, then the next step opens the next event.
func (s *geminiStreamForward) onEnd() {
	if !jsonx.Valid(s.skel) {
		s.fail(s.p.invalid("upstream stream event is not JSON"))
		return
	}
	a := readAnswer(s.skel)
	if a.err != nil {
		s.fail(s.p.streamError(s.skel))
		return
	}
	s.queue = s.tally.answerEnd(s.queue, a, s.pos)
	s.committed, s.st = true, stKind
}
