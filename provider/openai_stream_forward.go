package provider

import (
	"bytes"
	"errors"
	"io"

	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// Forwarding a reseller's event stream (ChatRequest.ForwardStream).
//
// A reseller sends an image as one chat.completion.chunk of megabytes: a
// delta whose content holds markdown ![image](data:image/png;base64,...),
// or whose images[] hold data URLs. Read as openaiStream reads it, a stream
// in flight holds the whole event; forwarded, it holds a window. The SSE
// reader hands each event's data out as a reader (sseReader.NextReader),
// and the walker of a forwarded answer (forward.go) walks it as it walks a
// chat.completion (openai_forward.go): an image's base64 is checked in one
// pass (string end, \/, alphabet and padding, its header with
// checkOutputImage), handed out window by window, and cut out of the
// skeleton, a placeholder left in its place.
//
// What goes out is decided by the buffered reading itself, not by a second
// reading of the same shapes: each event's skeleton is fed to an
// openaiStream (chunk), which splits the text, holds what may begin an
// image across events, and says where the finish reasons and usage go; its
// events are handed out, each placeholder image standing for the image
// forwarded. When an image's base64 begins, a copy of that reading (the
// trial) reads the event so far, closed where it stands, and the events
// before the image go out ahead of it. What went out ahead must be what
// the reading of the whole event (or of the events after it) hands out,
// else the stream fails: a stream that passes hands out exactly the events
// of its buffered reading.
//
// A markdown image may go on over several events (a reseller that cuts its
// content in pieces): its base64 pauses where its string ends (the
// walker's pause) and goes on in the next content of its choice; the held
// text of the buffered reading keeps its markup, with the placeholder, as
// it keeps the text of such an image whole.
//
// The events of one upstream event are held until it ends, as openaiStream
// holds them, unless an image in it is large enough to be handed on as it
// arrives: the first event handed out is what the router reads before it
// commits, so a stream failing before that (an error status, garbage, an
// image refused on its header) still fails over. After it, a failure ends
// the stream with an error.
//
// Limits: a choice's index must come before its content; one image is
// read at a time, so while an image of one choice is held over events, an
// image of another choice, or any event of another choice or the usage
// ahead of the held image's end, fails the stream (resellers answer one
// choice); an event that breaks (or carries an error member) after an
// image of it was handed on has handed on what came before the break; and
// a markdown image over several events is bounded by the cap of each
// event, not by the cap of the text held, as openaiStream bounds it.
type openaiStreamForward struct {
	forwardWalk
	p   *OpenAI
	sse *sseReader
	// ev is the data of the current event; the walker reads it through
	// chunkBody.
	ev     io.Reader
	mapped bool // err was turned into the stream's terms

	// buf is the buffered reading, fed each event's skeleton; trial reads
	// an event up to an image from a copy of its state.
	buf, trial openaiStream
	// expect are the events handed out ahead of buf's reading: its events
	// must begin with them.
	expect []Event
	// arena backs the texts of the events handed out ahead.
	arena []byte
	// between: stKind means the next event is opened; else a markdown
	// string is being read.
	between bool

	pos   int // elements of choices begun in the event
	index int // the index of the open choice

	// The markdown string being read: md is the choice's held text then
	// the string so far, scanning for an image's start resumes at mdFrom.
	md       []byte
	mdFrom   int
	afterImg int
	segs     []segment
	// holding: an image of choice held paused at the end of its string,
	// to go on in a later event.
	holding bool
	held    int
}

// Paths the stream walker acts on; "[]" is an array element.
var (
	pathChunkChoice    = []string{"choices", "[]"}
	pathChunkIndex     = []string{"choices", "[]", "index"}
	pathChunkContent   = []string{"choices", "[]", "delta", "content"}
	pathChunkImagesURL = []string{"choices", "[]", "delta", "images", "[]", "image_url"}
	pathChunkImageURL2 = []string{"choices", "[]", "delta", "images", "[]", "image_url", "url"}
)

// chunkBody is the body the walker reads: the current event's data. Its
// end is the end of the body only once the walker has read a whole value;
// before that, the event was cut.
type chunkBody struct{ s *openaiStreamForward }

// Read implements io.Reader.
func (b chunkBody) Read(p []byte) (int, error) {
	n, err := b.s.ev.Read(p)
	if err == io.EOF && b.s.st != stEnd {
		err = errEventCut
	}
	return n, err
}

// newStreamForward reads body (resp's, or any reader in tests) as the
// reseller's event stream.
func (p *OpenAI) newStreamForward(resp *upstream.Response, body io.Reader) *openaiStreamForward {
	s := &openaiStreamForward{p: p, sse: getSSEReader(body, p.opts.MaxBodyBytes)}
	s.buf.p, s.trial.p = p, p
	s.init(s, p.name, resp, chunkBody{s}, p.opts.MaxBodyBytes)
	s.st, s.between = stKind, true // the first step opens the first event
	return s
}

// Next implements Stream.
func (s *openaiStreamForward) Next() (*Event, error) {
	ev, err := s.forwardWalk.Next()
	if err != nil && err != io.EOF && !s.mapped {
		s.err, s.mapped = s.streamErr(err), true
		err = s.err
	}
	return ev, err
}

// streamErr turns a failed read of the walk into openaiStream's failure.
func (s *openaiStreamForward) streamErr(err error) error {
	switch {
	case errors.Is(err, errEventCut):
		// openaiStream reads the data the event has, which is not JSON.
		return s.p.invalid("upstream stream event is not JSON")
	case errors.Is(err, ErrEventTooLarge), errors.Is(err, upstream.ErrBodyTooLarge):
		return s.p.invalid("upstream stream event too large")
	}
	if pe, ok := AsError(err); ok && pe.Kind == KindTransport && pe.Err != nil {
		return transportError(s.p.name, pe.Err)
	}
	return err
}

// Close implements Stream.
func (s *openaiStreamForward) Close() {
	s.forwardWalk.Close()
	if s.sse != nil {
		putSSEReader(s.sse)
		s.sse, s.ev = nil, nil
	}
}

// onStep implements forwardKind: between two events it opens the next one
// and starts the walk over, or ends the stream; else it reads on in a
// markdown string.
func (s *openaiStreamForward) onStep() {
	if !s.between {
		s.markdownStep()
		return
	}
	ev, err := s.sse.NextReader()
	if err == io.EOF {
		if !s.buf.finished {
			s.fail(s.buf.endedEarly())
			return
		}
		s.end()
		return
	}
	if err != nil {
		if err == ErrEventTooLarge {
			s.fail(s.p.invalid("upstream stream event too large"))
			return
		}
		s.fail(transportError(s.p.name, err))
		return
	}
	// The events of the last upstream event were all handed out: what
	// they pointed into is reused.
	s.ev = ev
	s.skel, s.stack, s.st, s.read, s.committed = s.skel[:0], s.stack[:0], stValue, 0, false
	s.between, s.pos = false, 0
	if len(s.expect) == 0 {
		s.arena = s.arena[:0]
	}
}

// end ends the stream: held text goes out.
func (s *openaiStreamForward) end() {
	b := &s.buf
	b.queue = b.queue[:0]
	if err := b.flush(); err != nil {
		s.fail(err)
		return
	}
	s.reconcile(b.queue)
	if s.err == nil && (len(s.expect) > 0 || s.holding) {
		s.invalid("upstream image is where its stream does not read it")
		return
	}
	s.done = true
}

// onValue implements forwardKind.
func (s *openaiStreamForward) onValue(c byte) bool {
	switch {
	case len(s.stack) == 0:
		if c == '[' && s.read == 1 && s.isDone() {
			s.end()
			return true
		}
		if c != '{' {
			s.invalid("upstream stream event is not JSON")
			return true
		}
	case s.at(pathChunkChoice):
		s.index = s.pos
		s.pos++
	case c != '"':
	case s.at(pathChunkContent):
		s.content()
		return true
	case s.at(pathChunkImagesURL) || s.at(pathChunkImageURL2):
		label, ok := s.dataURLHead()
		if ok && s.err == nil {
			s.afterImg = stAfter
			s.cutImage(label, '"', "")
		}
		return ok
	}
	return false
}

// isDone reports whether the event, whose first byte was '[', is
// "[DONE]": the rest of it is "DONE]".
func (s *openaiStreamForward) isDone() bool {
	b, err := s.br.Peek(6)
	return err != nil && string(b) == "DONE]"
}

// onScalar implements forwardKind: a choice's index, as openaiStream reads
// it (out of range, it fails there).
func (s *openaiStreamForward) onScalar(vs int) {
	if s.at(pathChunkIndex) {
		if n, err := jsonx.Int(s.skel[vs:]); err == nil && n >= 0 && n < MaxN {
			s.index = int(n)
		}
	}
}

// content starts a delta's content: the image held paused of its choice
// goes on, or its markdown is read, after the text its choice holds.
func (s *openaiStreamForward) content() {
	s.skel = append(s.skel, '"')
	if s.holding && s.held == s.index {
		s.holding = false
		s.skel = append(s.skel, s.term)
		s.afterImg, s.st = stKind, stImage
		return
	}
	s.md = s.md[:0]
	if s.index < MaxN {
		s.md = append(s.md, s.buf.pending[s.index]...)
	}
	s.mdFrom, s.st = 0, stKind
}

// markdownStep reads on in a markdown string, to its end or to where an
// image's base64 begins.
func (s *openaiStreamForward) markdownStep() {
	b := s.markdownRead()
	if b == nil {
		return
	}
	switch b[len(b)-1] {
	case '"':
		if !escapedQuote(s.skel) {
			s.after()
			return
		}
		s.md = append(s.md, b...)
	case ',':
		s.md = append(s.md, b...)
		if label, ok := markdownImageAt(s.md, &s.mdFrom, &s.segs); ok {
			s.afterImg = stKind
			s.cutImage(label, ')', `"`)
		}
	default:
		s.md = append(s.md, b...)
	}
}

// cutImage cuts the base64 that begins here out of the skeleton (term ends
// it; tail closes the string it is in, for the trial) and hands out what
// precedes it.
func (s *openaiStreamForward) cutImage(label string, term byte, tail string) {
	if s.holding {
		s.invalid("upstream stream interleaves images")
		return
	}
	s.skel = append(s.skel, placeholder...)
	s.skel = append(s.skel, term)
	n := len(s.skel)
	s.skel = append(s.skel, tail...)
	s.closeOpen()
	s.ahead(s.skel)
	s.skel = s.skel[:n]
	if s.err != nil {
		return
	}
	s.label = label
	s.startImage(false, term, false)
	s.pause = 0
	if term == ')' {
		// A markdown image's string may end before its data does.
		s.pause = '"'
	}
}

// ahead reads the event so far (doc, closed where it stands) with a copy
// of the buffered reading's state, and hands out its events up to the
// image cut last, which its placeholder stands for.
func (s *openaiStreamForward) ahead(doc []byte) {
	t, b := &s.trial, &s.buf
	for c := range t.pending {
		t.pending[c] = append(t.pending[c][:0], b.pending[c]...)
	}
	t.queue, t.finished, t.images = t.queue[:0], b.finished, b.images
	if err := t.chunk(doc); err != nil {
		s.fail(err)
		return
	}
	k := len(t.queue) - 1
	for k >= 0 && !isPlaceholderImage(&t.queue[k]) {
		k--
	}
	if k < len(s.expect) || !s.agree(t.queue[:len(s.expect)]) {
		s.invalid("upstream image is where its stream does not read it")
		return
	}
	for _, ev := range t.queue[len(s.expect):k] {
		if ev.Text != nil {
			start := len(s.arena)
			s.arena = append(s.arena, ev.Text...)
			ev.Text = s.arena[start:len(s.arena):len(s.arena)]
		}
		s.expect = append(s.expect, ev)
		s.out(ev)
	}
	s.expect = append(s.expect, Event{Choice: t.queue[k].Choice, Image: &placeholderImage})
	s.choice = t.queue[k].Choice
}

// placeholderImage is what an image cut out reads as in the buffered
// reading of its skeleton.
var placeholderImage = Image{B64: []byte(placeholder)}

func isPlaceholderImage(ev *Event) bool {
	return ev.Image != nil && ev.Image.URL == "" && string(ev.Image.B64) == placeholder
}

// agree reports whether evs are the events handed out ahead, in order.
func (s *openaiStreamForward) agree(evs []Event) bool {
	for i := range evs {
		a, b := &evs[i], &s.expect[i]
		if isPlaceholderImage(b) {
			// An image cut out: the MIME its reading gives the
			// placeholder is its label's.
			if !isPlaceholderImage(a) || a.Choice != b.Choice {
				return false
			}
			continue
		}
		same := a.Choice == b.Choice && a.FinishReason == b.FinishReason && a.Refusal == b.Refusal &&
			(a.Text == nil) == (b.Text == nil) && bytes.Equal(a.Text, b.Text) && (a.Usage == nil) == (b.Usage == nil) &&
			(a.Usage == nil || *a.Usage == *b.Usage) && (a.Image == nil) == (b.Image == nil)
		if same && a.Image != nil {
			same = a.Image.URL == b.Image.URL && a.Image.MIME == b.Image.MIME && bytes.Equal(a.Image.B64, b.Image.B64)
		}
		if !same {
			return false
		}
	}
	return true
}

// reconcile hands out the events of the buffered reading of an event (or
// of the stream's end) that did not go out ahead.
func (s *openaiStreamForward) reconcile(evs []Event) {
	n := min(len(evs), len(s.expect))
	if !s.agree(evs[:n]) {
		s.invalid("upstream stream does not read as it was forwarded")
		return
	}
	s.expect = append(s.expect[:0], s.expect[n:]...)
	for _, ev := range evs[n:] {
		if isPlaceholderImage(&ev) {
			s.invalid("upstream image is where its stream does not read it")
			return
		}
		s.out(ev)
	}
}

// out queues ev, an event of the buffered reading; a whole image (a link,
// or data the walker did not cut out) as its pieces.
func (s *openaiStreamForward) out(ev Event) {
	if ev.Image == nil {
		s.emit(ev)
		return
	}
	ch := Choice{Index: ev.Choice, Images: []Image{*ev.Image}}
	s.queue = pieceEvents(s.queue, &ch, Piece{}, false, newPiece)
}

// onImage implements forwardKind: ahead handed out what precedes the
// image.
func (s *openaiStreamForward) onImage() {}

// onImageEnd implements forwardKind: the image ended, or its string did
// (paused: it goes on in a later event).
func (s *openaiStreamForward) onImageEnd() {
	s.md, s.mdFrom = s.md[:0], 0
	if s.paused {
		// The terminator put ahead in the skeleton is not there yet.
		s.skel = s.skel[:len(s.skel)-1]
		s.holding, s.held = true, s.choice
		s.st = stKind
		return
	}
	s.emit(Event{Choice: s.choice, Piece: &ImagePiece{Step: ImageEnd}})
	s.st = s.afterImg
}

// onClose implements forwardKind.
func (s *openaiStreamForward) onClose() {}

// onEnd implements forwardKind: the event's JSON ended. Its events are
// handed out, then the next step opens the next event.
func (s *openaiStreamForward) onEnd() {
	b := &s.buf
	b.queue = b.queue[:0]
	if err := b.chunk(s.skel); err != nil {
		s.fail(err)
		return
	}
	s.reconcile(b.queue)
	s.committed, s.st, s.between = true, stKind, true
}
