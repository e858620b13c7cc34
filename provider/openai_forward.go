package provider

import (
	"bytes"
	"io"

	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// Forwarding a chat.completion (ChatRequest.Forward).
//
// The answer is walked as Google's is (forwardWalk, gemini_forward.go says
// when it is committed): everything but the base64 of its images is kept in
// a skeleton. A reseller's image is a data URL: the whole string of an
// image_url (message.content parts, OpenRouter's message.images), or the
// target of markdown ![image](data:image/png;base64,...) inside
// message.content or a text part, text before and after it. Its base64 is
// cut out of the skeleton, a placeholder ("AAAA") left in its place, and
// handed out window by window.
//
// What goes out is decided by the buffered reading itself (parseChoice),
// not by a second reading of the same shapes: when an image's base64
// begins, the open choice's skeleton, closed where it stands, is read as a
// buffered choice; its pieces up to the placeholder (the text before the
// image, split and trimmed as splitMarkdownInto splits it; hosted links)
// go out, then the image. When the choice closes it is read again, whole,
// and what follows the last image goes out with its finish reason. Each
// reading must agree with what went out before (the same texts, the
// placeholders where they were cut, the same choice index), else the answer
// fails: an answer that passes hands out exactly the events of its buffered
// reading. An image the walker did not cut out (a data URL under a key
// spelt with escapes, or with a media type of more than maxDataURLHead
// bytes) stays in the skeleton and goes out whole from it.
//
// The markup of a data-URL image commits it: a data URL whose data turns
// out not to be base64, or whose header checkOutputImage refuses, fails the
// answer; the buffered reading refuses it the same way (parseResult).
//
// Limits of the layout: the choice's index must come before its first
// image, and message.content before message.images, as every reseller
// writes them; an answer laid out otherwise fails (before the commit, it
// fails over). The answer's id and created come from what precedes the
// first image.

// Paths the openai walker acts on; "[]" is an array element.
var (
	pathOAChoice    = []string{"choices", "[]"}
	pathOAContent   = []string{"choices", "[]", "message", "content"}
	pathOAPartText  = []string{"choices", "[]", "message", "content", "[]", "text"}
	pathOAPartURL   = []string{"choices", "[]", "message", "content", "[]", "image_url"}
	pathOAPartURL2  = []string{"choices", "[]", "message", "content", "[]", "image_url", "url"}
	pathOAImagesURL = []string{"choices", "[]", "message", "images", "[]", "image_url"}
	pathOAImageURL2 = []string{"choices", "[]", "message", "images", "[]", "image_url", "url"}
)

// placeholder stands in the skeleton for an image's base64 cut out of it:
// valid base64 of no known image kind, so the buffered reading takes it
// for an image with the label it came with.
const placeholder = "AAAA"

// maxDataURLHead bounds the start of a data URL read ahead to find
// ";base64,": real ones are "data:image/png;base64," and a parameter or two.
const maxDataURLHead = 512

// openaiForward is a chat.completion being forwarded.
type openaiForward struct {
	forwardWalk
	p *OpenAI

	id      string
	created int64
	// whole is the answer read whole when no image was cut out (Whole).
	whole *Result
	// started: an image was cut out; the choices closed before it were
	// queued then.
	started bool
	// choicesAt is the skeleton offset of the choices array, -1 before it.
	choicesAt int
	pos       int // elements of choices begun
	early     []span
	images    int // images of the choices closed

	// The open choice: where it starts, the images cut out of it, the
	// index its events carry, and the pieces handed out.
	choiceStart int
	cut         int
	cutAll      int
	index       int
	shown       []shownPiece

	// The markdown string being read (state stKind): where scanning for
	// an image's start resumes, and the state after the image being read.
	mdFrom   int
	afterImg int
	segs     []segment
}

// shownPiece is a piece of the open choice that went out: its text, or
// the image (at: where its placeholder is, -1 for an image whole in the
// skeleton or a link).
type shownPiece struct {
	text []byte
	img  Image
	at   int
}

// newForward reads body (resp's, or any reader in tests) as the answer.
func (p *OpenAI) newForward(resp *upstream.Response, body io.Reader) *openaiForward {
	f := &openaiForward{p: p, choicesAt: -1}
	f.init(f, p.name, resp, body, p.opts.MaxBodyBytes)
	return f
}

// Head implements Head: the id and created that precede the first image.
func (f *openaiForward) Head() (string, int64) { return f.id, f.created }

// onValue implements forwardKind.
func (f *openaiForward) onValue(c byte) bool {
	if len(f.stack) == 1 {
		switch string(f.rootKey()) {
		case "error":
			f.invalid("upstream answered 200 with an error")
			return true
		case "choices":
			if f.choicesAt >= 0 {
				f.invalid("upstream answer has two choices members")
				return true
			}
			f.choicesAt = len(f.skel)
		}
		return false
	}
	switch {
	case f.at(pathOAChoice):
		f.pos++
		if c != '{' {
			f.invalid("upstream choice is not an object")
			return true
		}
		f.choiceStart, f.cut, f.index, f.shown = len(f.skel), 0, -1, f.shown[:0]
	case c != '"':
	case f.at(pathOAContent) || f.at(pathOAPartText):
		f.skel = append(f.skel, '"')
		f.mdFrom, f.st = len(f.skel), stKind
		return true
	case f.at(pathOAPartURL) || f.at(pathOAPartURL2) || f.at(pathOAImagesURL) || f.at(pathOAImageURL2):
		return f.dataURL()
	}
	return false
}

// rootKey is the key of the top-level member being read.
func (f *openaiForward) rootKey() []byte {
	fr := f.stack[0]
	return f.skel[fr.ks:fr.ke]
}

// dataURL starts a string that may be an image's data URL: when it begins
// as one, its start goes to the skeleton and its base64 is cut out.
func (f *openaiForward) dataURL() bool {
	label, ok := f.dataURLHead()
	if !ok || f.err != nil {
		return ok
	}
	f.afterImg = stAfter
	f.cutImage(label, '"', "")
	return true
}

// dataURLHead reads the start of a string that may be an image's data URL,
// up to its base64, into the skeleton, and returns the media type it is
// labelled with; false (nothing read) when it does not begin as one.
func (f *forwardWalk) dataURLHead() (label string, ok bool) {
	w, _ := f.br.Peek(maxDataURLHead)
	rest, ok := bytes.CutPrefix(w, []byte("data:"))
	if !ok {
		return "", false
	}
	k := bytes.Index(rest, []byte(";base64,"))
	if k < 0 {
		return "", false
	}
	meta := rest[:k]
	for i := 0; i < len(meta); i++ {
		c := meta[i]
		if c == '\\' && i+1 < len(meta) && meta[i+1] == '/' {
			i++
			continue
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '.' || c == '+' ||
			c == '-' || c == ';' || c == '=') {
			return "", false
		}
	}
	label = string(bytes.ReplaceAll(meta, []byte(`\/`), []byte("/")))
	if len(label) < 7 || label[:6] != "image/" {
		return "", false
	}
	n := len("data:") + k + len(";base64,")
	f.skel = append(append(f.skel, '"'), w[:n]...)
	f.br.Discard(n)
	f.count(n)
	return label, true
}

// onStep implements forwardKind: it reads on in a markdown string, to its
// end or to where an image's base64 begins.
func (f *openaiForward) onStep() {
	if f.markdownRead() == nil {
		return
	}
	switch f.skel[len(f.skel)-1] {
	case '"':
		if !escapedQuote(f.skel) {
			f.after()
		}
	case ',':
		if label, ok := markdownImageAt(f.skel, &f.mdFrom, &f.segs); ok {
			f.afterImg = stKind
			f.cutImage(label, ')', `"`)
		}
	}
}

// markdownImageAt reports whether md, markdown text scanned from *from,
// ends where the base64 of a data-URL image begins, and the media type the
// image is labelled with; else it moves *from on past what can no longer
// change. segs is scratch space.
func markdownImageAt(md []byte, from *int, segs *[]segment) (string, bool) {
	if !dataMarkupEnd(md[*from:]) {
		return "", false
	}
	label, ok, resume, s := markdownDataStart(md[*from:], *segs)
	*segs = s
	if !ok {
		*from += resume
	}
	return label, ok
}

// markdownRead reads on in a markdown string into the skeleton, to its
// closing quote or past the next comma (where an image's data may begin),
// and returns what it read; nil when the read failed.
func (f *forwardWalk) markdownRead() []byte {
	w, err := f.br.Peek(max(f.br.Buffered(), 1))
	if len(w) == 0 {
		f.readErr(err)
		return nil
	}
	if q := bytes.IndexByte(w, '"'); q >= 0 {
		w = w[:q+1]
	}
	if c := bytes.IndexByte(w, ','); c >= 0 {
		w = w[:c+1]
	}
	n := len(w)
	f.skel = append(f.skel, w...)
	f.br.Discard(n)
	if !f.count(n) {
		return nil
	}
	return f.skel[len(f.skel)-n:]
}

// dataMarkupEnd reports whether b ends as the markup of a data-URL image
// does: "](data:", a media type, ";base64,". Only then is the text scanned
// for the image's start, which keeps a text of many ";base64," linear.
func dataMarkupEnd(b []byte) bool {
	const b64 = ";base64,"
	if !bytes.HasSuffix(b, []byte(b64)) {
		return false
	}
	j := len(b) - len(b64)
	k := j
	for k > 0 && j-k <= 66 && mediaTypeByte(b[k-1]) {
		k--
	}
	return bytes.HasSuffix(b[:k], []byte("](data:"))
}

// cutImage cuts the base64 that begins here out of the skeleton (term ends
// it; tail closes the string it is in, for the reading of the choice so
// far) and queues what precedes it in the choice.
func (f *openaiForward) cutImage(label string, term byte, tail string) {
	if f.cutAll++; f.cutAll > maxAnswerImages {
		f.invalid("upstream answer has too many images")
		return
	}
	at := len(f.skel)
	f.skel = append(f.skel, placeholder...)
	f.skel = append(f.skel, term)
	n := len(f.skel)
	// The answer so far, closed where it stands.
	f.skel = append(f.skel, tail...)
	end := len(f.skel) + len(f.stack) - 2
	f.closeOpen()
	if !f.started {
		f.start(f.skel)
	}
	if f.err == nil {
		f.showUpTo(f.skel[f.choiceStart:end], at)
	}
	f.skel = f.skel[:n]
	if f.err != nil {
		return
	}
	f.cut++
	f.choice, f.label = f.index, label
	f.startImage(false, term, false)
}

// closeOpen closes, in the skeleton, the containers open where it stands:
// the answer so far read as whole.
func (f *forwardWalk) closeOpen() {
	for i := len(f.stack) - 1; i >= 0; i-- {
		if f.stack[i].obj {
			f.skel = append(f.skel, '}')
		} else {
			f.skel = append(f.skel, ']')
		}
	}
}

// start queues what the choices closed before the first image hold.
func (f *openaiForward) start(doc []byte) {
	f.started = true
	if v, ok := jsonx.Get(doc, "id"); ok && jsonx.KindOf(v) == jsonx.String {
		f.id, _ = jsonx.Unquote(v)
	}
	if v, ok := jsonx.Get(doc, "created"); ok {
		f.created, _ = jsonx.Int(v)
	}
	for _, c := range f.early {
		f.closeChoice(f.skel[c.start:c.end], c.pos)
	}
	f.early = nil
}

// showUpTo reads the open choice, closed where it stands (b), and queues
// its pieces up to the image whose placeholder is at at.
func (f *openaiForward) showUpTo(b []byte, at int) {
	ch, k := f.reread(b, f.pos-1)
	if k < 0 {
		return
	}
	for ; ; k++ {
		p, ok := choicePiece(&ch, k)
		if !ok {
			f.invalid("upstream image is where its answer does not read it")
			return
		}
		if p.Text == nil && f.isPlaceholder(&ch, p, at) {
			f.shown = append(f.shown, shownPiece{at: at})
			return
		}
		f.show(&ch, p)
	}
}

// reread reads the choice b (the open one, or one without images cut
// out) as the buffered reading does, and checks it against what went out
// of it: the choice, and how many of its pieces went out (-1 and the
// answer failed when it does not read as they did).
func (f *openaiForward) reread(b []byte, pos int) (Choice, int) {
	ch, err := f.p.parseChoice(pos, b)
	if err != nil {
		f.fail(err)
		return ch, -1
	}
	if f.cut == 0 {
		f.index = ch.Index
	}
	return ch, f.agree(&ch)
}

// agree checks that ch, the open choice read again, begins with the pieces
// that went out, and returns how many they are (-1 and the answer failed
// when it does not).
func (f *openaiForward) agree(ch *Choice) int {
	if ch.Index != f.index {
		f.invalid("upstream choice index comes after its images")
		return -1
	}
	for k, s := range f.shown {
		p, ok := choicePiece(ch, k)
		if !ok || !f.same(ch, p, s) {
			f.invalid("upstream choice does not read as it was forwarded")
			return -1
		}
	}
	return len(f.shown)
}

// same reports whether piece p of ch is the piece s that went out.
func (f *openaiForward) same(ch *Choice, p Piece, s shownPiece) bool {
	if p.Text != nil || s.text != nil {
		return p.Text != nil && bytes.Equal(p.Text, s.text)
	}
	if s.at >= 0 {
		return f.isPlaceholder(ch, p, s.at)
	}
	if p.Image < 0 || p.Image >= len(ch.Images) {
		return false
	}
	img := &ch.Images[p.Image]
	return img.URL == s.img.URL && img.MIME == s.img.MIME && bytes.Equal(img.B64, s.img.B64)
}

// isPlaceholder reports whether piece p of ch is the image cut out at at:
// its base64 is the placeholder there, not a copy.
func (f *openaiForward) isPlaceholder(ch *Choice, p Piece, at int) bool {
	if p.Image < 0 || p.Image >= len(ch.Images) {
		return false
	}
	b := ch.Images[p.Image].B64
	return len(b) == len(placeholder) && at+len(b) <= len(f.skel) && &b[0] == &f.skel[at]
}

// show queues the events of piece p of the open choice.
func (f *openaiForward) show(ch *Choice, p Piece) {
	f.queue = pieceEvents(f.queue, ch, p, false, newPiece)
	s := shownPiece{text: p.Text, at: -1}
	if p.Text == nil && p.Image >= 0 && p.Image < len(ch.Images) {
		s.img = ch.Images[p.Image]
	}
	f.shown = append(f.shown, s)
}

func newPiece(p ImagePiece) *ImagePiece { return &p }

// onImageEnd implements forwardKind.
func (f *openaiForward) onImageEnd() {
	f.emit(Event{Choice: f.choice, Piece: &ImagePiece{Step: ImageEnd}})
	f.st = f.afterImg
	f.mdFrom = len(f.skel)
}

// onClose implements forwardKind.
func (f *openaiForward) onClose() {
	if !f.at(pathOAChoice) {
		return
	}
	if !f.started {
		f.early = append(f.early, span{f.choiceStart, len(f.skel), f.pos - 1})
		return
	}
	f.closeChoice(f.skel[f.choiceStart:], f.pos-1)
}

// closeChoice queues what the choice b, read whole, holds past what went
// out of it, and its finish reason.
func (f *openaiForward) closeChoice(b []byte, pos int) {
	ch, k := f.reread(b, pos)
	if k < 0 {
		return
	}
	if f.images += len(ch.Images); f.images > maxAnswerImages {
		f.invalid("upstream answer has too many images")
		return
	}
	if f.cut == 0 {
		f.queue = choiceEvents(f.queue, &ch, false, newPiece)
		return
	}
	// Every image cut out went out before (shown), each placeholder is
	// read once: what follows them is text, links and images whole in
	// the skeleton.
	for ; ; k++ {
		p, ok := choicePiece(&ch, k)
		if !ok {
			break
		}
		f.queue = pieceEvents(f.queue, &ch, p, false, newPiece)
	}
	f.emit(Event{Choice: ch.Index, FinishReason: ch.FinishReason})
	f.cut = 0
}

// onScalar implements forwardKind; nothing of a scalar is needed before
// the end.
func (f *openaiForward) onScalar(int) {}

// onImage implements forwardKind: cutImage queued what precedes the image.
func (f *openaiForward) onImage() {}

// onEnd implements forwardKind: it reads the end of the answer.
func (f *openaiForward) onEnd() {
	if !f.started {
		// No image cut out: the answer is read as a buffered one.
		if f.whole = f.endWhole(f.p.parseResult(f.skel)); f.whole != nil {
			f.id, f.created = f.whole.ID, f.whole.Created
		}
		return
	}
	if !jsonx.Valid(f.skel) {
		f.invalid("upstream answer is not JSON")
		return
	}
	if _, ok := jsonx.Get(f.skel, "error"); ok {
		f.invalid("upstream answered 200 with an error")
		return
	}
	if v, ok := jsonx.Get(f.skel, "choices"); !ok || &v[0] != &f.skel[f.choicesAt] {
		f.invalid("upstream answer has two choices members")
		return
	}
	u := Usage{}
	if v, ok := jsonx.Get(f.skel, "usage"); ok && jsonx.KindOf(v) == jsonx.Object {
		u = f.p.parseUsage(v, f.images)
	}
	f.emit(Event{Usage: &u})
	f.done = true
}
