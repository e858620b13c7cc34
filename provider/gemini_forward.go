package provider

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"

	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// Forwarding a generateContent answer (ChatRequest.Forward).
//
// The answer is read through a 256 KiB window (forwardWindow). Everything but the base64 of
// the images is kept, as it comes, in a skeleton: the answer with each
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

// forwardWindow is the read window of a forwarded answer, and so the most
// of an image each write to the client carries. fasthttp frames each write
// as a chunk and flushes it in about three write calls, each waking the
// client: 64 KiB windows made 96 of them for a 2 MB image and doubled the
// time the gateway adds at c=1; 256 KiB keep it where reading the answer
// whole had it, for 256 KiB held per answer in flight.
const forwardWindow = 256 << 10

var forwardReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, forwardWindow) }}

// maxJSONDepth bounds the nesting the skeleton walker follows.
const maxJSONDepth = 64

// walker states.
const (
	stValue        = iota // a value must come
	stValueOrClose        // after '[': a value or ']'
	stKeyOrClose          // after '{': a key or '}'
	stKey                 // after ',' in an object
	stColon
	stAfter // after a value: ',' or the close of its container
	stEnd   // the top-level value is closed
	stImage // inside an image's base64
)

// frame is one open container; for an object, its current key is
// skel[ks:ke].
type frame struct {
	obj    bool
	ks, ke int
}

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
	p          *Gemini
	resp       *upstream.Response // nil when reading a plain io.Reader (tests)
	br         *bufio.Reader
	wantImages bool
	digest     bool
	max        int // MaxBodyBytes: bounds what is read in all
	read       int

	skel  []byte
	stack []frame
	st    int

	queue []Event
	qi    int
	// drop is how much of br's buffer the last window handed out holds.
	drop int

	// started: an image was judged (the candidates closed before it were
	// queued); committed: events may be handed out.
	started   bool
	committed bool
	done      bool
	err       error
	id        string
	// whole is the answer read whole when it had no image (Whole).
	whole *Result

	pos        int     // candidates closed
	candStart  int     // skeleton offset of the open candidate
	candImages int     // images forwarded in the open candidate
	texts      []Event // text parts of the open candidate before its first image
	early      []span  // candidates closed before the commit
	images     int     // images forwarded and ended

	partStart int
	label     string // the open part's mimeType, when it came before its data
	thought   bool
	forwarded bool // the open part's data is being or was forwarded

	// The image being read: its base64 validity, the head read ahead
	// before it is judged, and its digest.
	b64n int
	pad  int
	skip bool // the data is not an image of the answer: checked, not forwarded
	// judging: the head is read ahead, not handed out yet.
	judging bool
	head    []byte
	headAt  int // len(head) when it was last judged
	dig     *b64Digest
	unesc   []byte
	win     ImagePiece // the window handed out
}

// forward opens the answer of a non-stream call for forwarding.
func (p *Gemini) forward(resp *upstream.Response, req *ChatRequest) *geminiForward {
	return p.newForward(resp, resp.BodyStream(), req)
}

// newForward reads body (resp's, or any reader in tests) as the answer.
func (p *Gemini) newForward(resp *upstream.Response, body io.Reader, req *ChatRequest) *geminiForward {
	br := forwardReaders.Get().(*bufio.Reader)
	br.Reset(body)
	return &geminiForward{p: p, resp: resp, br: br, wantImages: wantsImages(req), digest: req.ForwardDigest,
		max: p.opts.MaxBodyBytes, skel: make([]byte, 0, 1024)}
}

// Head implements Head: Google's responseId comes last, after the commit.
func (f *geminiForward) Head() (string, int64) { return f.id, 0 }

// Close implements Stream.
func (f *geminiForward) Close() {
	if f.dig != nil {
		f.dig.stop()
		f.dig = nil
	}
	if f.br != nil {
		f.br.Reset(nil)
		forwardReaders.Put(f.br)
		f.br = nil
	}
	if f.resp != nil {
		f.resp.Release()
		f.resp = nil
	}
}

// Next implements Stream: the first call reads ahead to the commit.
func (f *geminiForward) Next() (*Event, error) {
	for {
		if f.qi < len(f.queue) && (f.committed || f.done) {
			f.qi++
			return &f.queue[f.qi-1], nil
		}
		if f.err != nil {
			return nil, f.err
		}
		if f.done {
			return nil, io.EOF
		}
		f.queue, f.qi = f.queue[:0], 0
		f.step()
	}
}

// fail ends the answer with err (once).
func (f *geminiForward) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

func (f *geminiForward) invalid(msg string) { f.fail(f.p.invalid(msg)) }

// readErr reports a failed read of the body: cut short or dropped.
func (f *geminiForward) readErr(err error) {
	if err == io.EOF {
		f.invalid("upstream answer ends before its JSON does")
		return
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		f.fail(&Error{Provider: f.p.name, Kind: KindTransport, Status: 200, Message: "upstream connection dropped mid-answer", Err: err})
		return
	}
	f.fail(transportError(f.p.name, err))
}

// step advances until it has queued events past the commit, the answer
// ended, or it failed.
func (f *geminiForward) step() {
	if f.drop > 0 {
		f.discard(f.drop)
		f.drop = 0
	}
	for f.err == nil && !f.done && !(f.committed && len(f.queue) > 0) {
		if f.st == stImage {
			f.imageStep()
			continue
		}
		c, err := f.br.ReadByte()
		if err != nil {
			if err == io.EOF && f.st == stEnd {
				f.finish()
				return
			}
			f.readErr(err)
			return
		}
		if f.read++; f.read > f.max {
			f.fail(&Error{Provider: f.p.name, Kind: KindInvalidResponse, Status: 200, Message: "upstream answer too large", Err: upstream.ErrBodyTooLarge})
			return
		}
		if c == ' ' || c == '\n' || c == '\r' || c == '\t' {
			continue
		}
		f.token(c)
	}
}

// token moves the walker on by one significant byte c outside strings.
func (f *geminiForward) token(c byte) {
	switch f.st {
	case stValue, stValueOrClose:
		if c == ']' && f.st == stValueOrClose {
			f.close(c)
			return
		}
		f.value(c)
	case stKeyOrClose, stKey:
		if c == '}' && f.st == stKeyOrClose {
			f.close(c)
			return
		}
		if c != '"' {
			f.invalid("upstream answer is not JSON")
			return
		}
		ks := len(f.skel) + 1
		if !f.str() {
			return
		}
		top := &f.stack[len(f.stack)-1]
		top.ks, top.ke = ks, len(f.skel)-1
		f.st = stColon
	case stColon:
		if c != ':' {
			f.invalid("upstream answer is not JSON")
			return
		}
		f.skel = append(f.skel, c)
		f.st = stValue
	case stAfter:
		switch c {
		case ',':
			f.skel = append(f.skel, c)
			if f.stack[len(f.stack)-1].obj {
				f.st = stKey
			} else {
				f.st = stValue
			}
		case '}', ']':
			f.close(c)
		default:
			f.invalid("upstream answer is not JSON")
		}
	default:
		f.invalid("upstream answer has data after its JSON")
	}
}

// value starts the value that begins with c.
func (f *geminiForward) value(c byte) {
	switch c {
	case '{', '[':
		if len(f.stack) >= maxJSONDepth {
			f.invalid("upstream answer nests too deep")
			return
		}
		if c == '{' {
			switch {
			case f.at(pathCandidate):
				f.candStart, f.candImages, f.texts = len(f.skel), 0, f.texts[:0]
			case f.at(pathPart):
				f.partStart, f.label, f.thought, f.forwarded = len(f.skel), "", false, false
			}
		}
		f.skel = append(f.skel, c)
		f.stack = append(f.stack, frame{obj: c == '{'})
		if c == '{' {
			f.st = stKeyOrClose
		} else {
			f.st = stValueOrClose
		}
		return
	case '"':
		if f.at(pathData) {
			f.skel = append(f.skel, `""`...)
			f.startImage()
			return
		}
		vs := len(f.skel)
		if !f.str() {
			return
		}
		if f.at(pathMIME) {
			f.label = vEnum(f.skel[vs:])
		}
	default:
		vs := len(f.skel)
		f.skel = append(f.skel, c)
		for {
			b, err := f.br.Peek(1)
			if err != nil || !literalByte(b[0]) {
				break
			}
			f.br.Discard(1)
			f.read++
			f.skel = append(f.skel, b[0])
		}
		if f.at(pathThought) && string(f.skel[vs:]) == "true" {
			f.thought = true
		}
	}
	f.after()
}

func literalByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '+' || c == '.'
}

// after sets the state that follows a complete value.
func (f *geminiForward) after() {
	if len(f.stack) == 0 {
		f.st = stEnd
	} else {
		f.st = stAfter
	}
}

// str copies the rest of a string whose opening quote was read into the
// skeleton, quotes included. It reports false when it failed.
func (f *geminiForward) str() bool {
	f.skel = append(f.skel, '"')
	for {
		b, err := f.br.ReadSlice('"')
		if f.read += len(b); f.read > f.max {
			f.fail(&Error{Provider: f.p.name, Kind: KindInvalidResponse, Status: 200, Message: "upstream answer too large", Err: upstream.ErrBodyTooLarge})
			return false
		}
		f.skel = append(f.skel, b...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			f.readErr(err)
			return false
		}
		// The quote is escaped when an odd run of backslashes precedes it.
		bs := 0
		for i := len(f.skel) - 2; i >= 0 && f.skel[i] == '\\'; i-- {
			bs++
		}
		if bs%2 == 0 {
			return true
		}
	}
}

// close closes the innermost container with c.
func (f *geminiForward) close(c byte) {
	top := f.stack[len(f.stack)-1]
	if top.obj != (c == '}') {
		f.invalid("upstream answer is not JSON")
		return
	}
	f.skel = append(f.skel, c)
	f.stack = f.stack[:len(f.stack)-1]
	switch {
	case c != '}':
	case f.at(pathPart):
		f.partClosed()
	case f.at(pathCandidate):
		f.candidateClosed()
	}
	f.after()
}

// at reports whether the value being read sits at path.
func (f *geminiForward) at(path []string) bool {
	if len(f.stack) != len(path) {
		return false
	}
	for i, fr := range f.stack {
		if path[i] == "[]" {
			if fr.obj {
				return false
			}
			continue
		}
		if !fr.obj || string(f.skel[fr.ks:fr.ke]) != path[i] {
			return false
		}
	}
	return true
}

// emit queues an event.
func (f *geminiForward) emit(ev Event) { f.queue = append(f.queue, ev) }

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

// startImage begins reading the base64 of a part's data.
func (f *geminiForward) startImage() {
	f.st = stImage
	f.b64n, f.pad, f.head, f.headAt = 0, 0, nil, 0
	f.skip = f.thought || (f.label != "" && (len(f.label) < 7 || f.label[:6] != "image/"))
	f.forwarded = !f.skip
	f.judging = f.forwarded
	if f.dig != nil {
		f.dig.stop() // a part with a second data member
	}
	f.dig = nil
	if f.forwarded && f.digest {
		f.dig = newB64Digest()
	}
}

// imageStep reads one window of an image's base64: until the head is
// judged it is kept (head), then each window is queued as it is.
func (f *geminiForward) imageStep() {
	first := f.judging && f.head == nil
	// Each look takes as much of the image as the window holds: the first
	// to judge its head in place, the others so that each write to the
	// client carries a full window.
	w, err := f.br.Peek(f.br.Size())
	if len(w) == 0 || first && err != nil && bytes.IndexByte(w, '"') < 0 {
		f.readErr(err)
		return
	}
	if w[0] == '\\' && len(w) < 2 {
		if w, err = f.br.Peek(2); err != nil {
			f.readErr(err)
			return
		}
	}
	end := bytes.IndexByte(w, '"')
	n := end
	if end < 0 {
		n = len(w)
	}
	data, used, ok := f.checkB64(w[:n], end >= 0)
	if !ok {
		f.invalid("upstream image is not valid base64")
		return
	}
	closed := end >= 0 && used == n
	if f.read += used; f.read > f.max {
		f.fail(&Error{Provider: f.p.name, Kind: KindInvalidResponse, Status: 200, Message: "upstream answer too large", Err: upstream.ErrBodyTooLarge})
		return
	}
	if closed {
		f.read++ // the quote
	}
	if closed && (f.b64n == 0 || f.b64n%4 != 0) {
		f.invalid("upstream image is not valid base64")
		return
	}
	if f.dig != nil {
		// Hashed while the window is written to the client; discard
		// waits for it.
		f.dig.feed(data)
	}
	switch {
	case f.skip:
		f.discard(used + b2i(closed))
	case first && !closed:
		// A large image: judged on its first window, which then goes out
		// as it lies; a header that needs more is read ahead as a head.
		mime, why, more := checkOutputImage(f.label, data, false)
		switch {
		case why != "":
			f.invalid(why)
		case more:
			f.head = append(make([]byte, 0, 2*len(data)), data...)
			f.headAt = len(f.head)
			f.discard(used)
		default:
			f.begin(mime, data)
			f.committed = true
			f.drop = used
		}
	case f.judging:
		// Reading ahead: the head is copied so the window can move on.
		f.head = append(f.head, data...)
		f.discard(used + b2i(closed))
		f.judge(closed)
	case len(data) == 0:
		f.discard(used + b2i(closed))
	default:
		// A window handed out as it lies in the read buffer: what was
		// read ahead goes out with it, and the answer is committed.
		// Once committed, one window at a time is queued: its piece is
		// reused.
		f.committed = true
		f.win = ImagePiece{Step: ImageData, Data: data}
		f.emit(Event{Choice: f.pos, Piece: &f.win})
		f.drop = used + b2i(closed)
	}
	if closed && f.err == nil {
		f.st = stAfter
	}
}

// discard moves the read window on by n, once the digest is done with it.
func (f *geminiForward) discard(n int) {
	if f.dig != nil {
		f.dig.wait()
	}
	f.br.Discard(n)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// judge decides on the image from its head once it can (whole: the image
// ended): refused, or begun with its head as the first window, which
// commits the answer.
func (f *geminiForward) judge(whole bool) {
	if !whole && (len(f.head) < forwardWindow || len(f.head) < 2*f.headAt) {
		// A first window is read ahead, to fail over on what breaks early;
		// past it, the head is judged again only once it has doubled, so
		// reading ahead stays linear.
		return
	}
	f.headAt = len(f.head)
	mime, why, more := checkOutputImage(f.label, f.head, whole)
	if more {
		return
	}
	if why != "" {
		f.invalid(why)
		return
	}
	f.begin(mime, f.head)
	// The head stays queued while the answer is read ahead: the next image
	// gets a buffer of its own.
	f.head = nil
}

// begin queues the start of an image judged good, and its first window.
func (f *geminiForward) begin(mime string, first []byte) {
	if !f.started {
		f.start()
	}
	for _, t := range f.texts {
		f.emit(t)
	}
	f.texts = f.texts[:0]
	f.candImages++
	f.emit(Event{Choice: f.pos, Piece: &ImagePiece{Step: ImageBegin, MIME: mime}})
	f.emit(Event{Choice: f.pos, Piece: &ImagePiece{Step: ImageData, Data: first}})
	f.judging = false
}

// start queues what the candidates closed before the first image hold.
func (f *geminiForward) start() {
	f.started = true
	for _, c := range f.early {
		f.closeCandidate(f.skel[c.start:c.end], c.pos, false)
	}
	f.early = nil
}

// checkB64 checks a window of an image string (the part before its closing
// quote, if the window holds it) and returns its base64, unescaped, and how
// much of w it used: a window that ends inside an escape stops before it.
func (f *geminiForward) checkB64(w []byte, quoted bool) (data []byte, used int, ok bool) {
	if f.pad == 0 && b64Run(w) {
		f.b64n += len(w)
		return w, len(w), true
	}
	out := w[:0:0]
	escaped := bytes.IndexByte(w, '\\') >= 0
	if escaped {
		out = f.unesc[:0]
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c == '\\' {
			if i+1 >= len(w) {
				if quoted {
					return nil, 0, false // an escaped quote
				}
				break // the escape goes on in the next window
			}
			if w[i+1] != '/' {
				return nil, 0, false
			}
			i++
			c = '/'
		}
		switch {
		case c == '=':
			if f.pad++; f.pad > 2 {
				return nil, 0, false
			}
		case f.pad > 0 || !b64Alphabet[c]:
			return nil, 0, false
		}
		f.b64n++
		if escaped {
			out = append(out, c)
		}
		used = i + 1
	}
	if escaped {
		f.unesc = out
		return out, used, true
	}
	return w[:used], used, true
}

// finish reads the end of the answer.
func (f *geminiForward) finish() {
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
