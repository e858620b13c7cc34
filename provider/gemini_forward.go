package provider

import (
	"bytes"
	"io"

	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// Forwarding a generateContent answer (ChatRequest.Forward).
//
// The answer is read through a 256 KiB window (forwardWindow) by the
// walker of forward.go (forwardWalk). Everything but the base64 of the
// images is kept, as it comes, in a skeleton: the answer with each
// inlineData.data string emptied, a few KiB. The images' base64 is checked
// (JSON string end, the only escape Google may use, \/, and the base64
// alphabet and padding) and handed out window by window, so an answer in
// flight holds a window, not its image.
//
// The skeleton is walked by a small JSON state machine that knows the path
// to each value. When a part of a candidate closes, its skeleton (small) is
// validated and read with readPart, exactly as a buffered answer's parts
// are; when a candidate closes, with readCandidate; at the end, the whole
// skeleton with readAnswer (usage, an error member). The buffered reading
// of the same answer therefore decides the same text, notices, finish
// reasons and usage.
//
// Commit: the first Next reads ahead until an image's base64 fills the
// read window (the image's header is judged in it, in place, by
// checkOutputImage: its kind and declared dimensions; a header that needs
// more is read ahead as a copied head), or to the end of the answer: an
// answer whose images fit the window is read whole before it is handed
// over. Every failure until then (an error status, garbage, a damaged or
// oversized image, a dropped connection) is returned by that first Next,
// so the router can still try another provider. A failure after it ends
// the answer with an error from Next.
//
// Limits of the layout: a part's mimeType and "thought" are known when its
// data starts only if they come before it, as Google writes them. A part
// marked thought after its data has been forwarded stays an image of the
// answer; an image without a mimeType before its data is taken for the
// kind its bytes show. Choices with images are numbered in the order they
// come (Google's index follows the content).

// Paths the walker acts on; "[]" is an array element.
var (
	pathCandidate = []string{"candidates", "[]"}
	pathPart      = []string{"candidates", "[]", "content", "parts", "[]"}
	pathData      = []string{"candidates", "[]", "content", "parts", "[]", "inlineData", "data"}
	pathMIME      = []string{"candidates", "[]", "content", "parts", "[]", "inlineData", "mimeType"}
	pathThought   = []string{"candidates", "[]", "content", "parts", "[]", "thought"}
)

// span is a range of the skeleton.
type span struct{ start, end, pos int }

// geminiForward is a generateContent answer being forwarded.
type geminiForward struct {
	forwardWalk
	p          *Gemini
	wantImages bool
	digest     bool

	// started: an image was judged (the candidates closed before it were
	// queued).
	started bool
	id      string
	// whole is the answer read whole when it had no image (Whole).
	whole *Result

	pos        int     // candidates closed
	candStart  int     // skeleton offset of the open candidate
	candImages int     // images forwarded in the open candidate
	texts      []Event // text parts of the open candidate before its first image
	early      []span  // candidates closed before the commit
	images     int     // images forwarded and ended

	partStart int
	thought   bool
	forwarded bool // the open part's data is being or was forwarded
}

// forward opens the answer of a non-stream call for forwarding.
func (p *Gemini) forward(resp *upstream.Response, req *ChatRequest) *geminiForward {
	return p.newForward(resp, resp.BodyStream(), req)
}

// newForward reads body (resp's, or any reader in tests) as the answer.
func (p *Gemini) newForward(resp *upstream.Response, body io.Reader, req *ChatRequest) *geminiForward {
	f := &geminiForward{p: p, wantImages: wantsImages(req), digest: req.ForwardDigest}
	f.init(f, p.name, resp, body, p.opts.MaxBodyBytes)
	return f
}

// Head implements Head: Google's responseId comes last, after the commit.
func (f *geminiForward) Head() (string, int64) { return f.id, 0 }

// onValue implements forwardKind.
func (f *geminiForward) onValue(c byte) bool {
	switch {
	case c == '{' && f.at(pathCandidate):
		f.candStart, f.candImages, f.texts = len(f.skel), 0, f.texts[:0]
	case c == '{' && f.at(pathPart):
		f.partStart, f.label, f.thought, f.forwarded = len(f.skel), "", false, false
	case c == '"' && f.at(pathData):
		f.skel = append(f.skel, `""`...)
		skip := f.thought || (f.label != "" && (len(f.label) < 7 || f.label[:6] != "image/"))
		f.forwarded = !skip
		f.choice = f.pos
		f.startImage(skip, '"', f.digest)
		return true
	}
	return false
}

// onScalar implements forwardKind.
func (f *geminiForward) onScalar(vs int) {
	switch {
	case f.at(pathMIME):
		f.label = vEnum(f.skel[vs:])
	case f.at(pathThought) && string(f.skel[vs:]) == "true":
		f.thought = true
	}
}

// onClose implements forwardKind.
func (f *geminiForward) onClose() {
	switch {
	case f.at(pathPart):
		f.partClosed()
	case f.at(pathCandidate):
		f.candidateClosed()
	}
}

// onImageEnd implements forwardKind: the part's end (its signature) ends
// the image.
func (f *geminiForward) onImageEnd() { f.st = stAfter }

// onStep implements forwardKind; Google's answer needs no state of its own.
func (f *geminiForward) onStep() { f.invalid("upstream answer is not JSON") }

// partClosed reads the part that just closed.
func (f *geminiForward) partClosed() {
	b := f.skel[f.partStart:]
	if !jsonx.Valid(b) {
		f.invalid("upstream answer is not JSON")
		return
	}
	if f.forwarded {
		end := &ImagePiece{Step: ImageEnd}
		vMembers(b, func(k, v []byte) {
			if string(k) == "thoughtSignature" {
				end.Signature = bytes.Clone(readSignature(v))
			}
		})
		if f.dig != nil {
			end.Digest, end.Digested = f.dig.sum()
			f.dig = nil
		}
		f.images++
		f.emit(Event{Choice: f.pos, Piece: end})
		return
	}
	part, ok, _ := readPart(b)
	if !ok || part.isImg || len(part.text) == 0 {
		return
	}
	ev := Event{Choice: f.pos, Text: part.text}
	if f.candImages > 0 {
		f.emit(ev)
	} else {
		f.texts = append(f.texts, ev)
	}
}

// candidateClosed reads the candidate that just closed. Before the commit
// a candidate without images waits: the answer may have none, and is then
// read whole at its end.
func (f *geminiForward) candidateClosed() {
	b := f.skel[f.candStart:]
	if !jsonx.Valid(b) {
		f.invalid("upstream answer is not JSON")
		return
	}
	pos := f.pos
	f.pos++
	if f.candImages == 0 && !f.started {
		f.early = append(f.early, span{f.candStart, len(f.skel), pos})
		return
	}
	f.closeCandidate(b, pos, f.candImages > 0)
}

// closeCandidate queues what ends a candidate: its finish reason, and for
// one without images its whole choice as a buffered answer reads it.
func (f *geminiForward) closeCandidate(b []byte, pos int, images bool) {
	gc := readCandidate(b, pos)
	if images {
		if gc.index < 0 || gc.index >= MaxN {
			f.invalid("upstream candidate index out of range")
			return
		}
		f.emit(Event{Choice: pos, FinishReason: geminiFinish(gc.finish, true)})
		return
	}
	ch, err := f.p.readChoice(gc, f.wantImages)
	if err != nil {
		f.fail(err)
		return
	}
	f.emit(Event{Choice: ch.Index, Text: ch.Text})
	f.emit(Event{Choice: ch.Index, FinishReason: ch.FinishReason})
}

// onImage implements forwardKind: what the candidates closed before the
// first image hold, then the open candidate's text before the image.
func (f *geminiForward) onImage() {
	if !f.started {
		f.started = true
		for _, c := range f.early {
			f.closeCandidate(f.skel[c.start:c.end], c.pos, false)
		}
		f.early = nil
	}
	for _, t := range f.texts {
		f.emit(t)
	}
	f.texts = f.texts[:0]
	f.candImages++
}

// onEnd implements forwardKind: it reads the end of the answer.
func (f *geminiForward) onEnd() {
	if !f.started {
		// No image: the answer is small and read as a buffered one.
		res, err := f.p.parseAnswer(f.skel, f.wantImages)
		if err != nil {
			f.fail(err)
			return
		}
		f.id, f.whole = res.ID, res
		f.queue = append(f.queue[:0], newResultStream(res, false).evs...)
		f.done = true
		return
	}
	if !jsonx.Valid(f.skel) {
		f.invalid("upstream answer is not JSON")
		return
	}
	a := readAnswer(f.skel)
	if a.err != nil {
		f.invalid("upstream answered 200 with an error")
		return
	}
	if jsonx.KindOf(a.responseID) == jsonx.String {
		f.id, _ = jsonx.Unquote(a.responseID)
	}
	u := Usage{}
	if a.usage != nil {
		u = readGeminiUsage(a.usage).neutral(f.images, f.p.opts.TokensPerImage)
	}
	f.emit(Event{Usage: &u})
	f.done = true
}
