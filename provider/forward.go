package provider

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"io"
	"sync"

	"nanogate/upstream"
)

// ImageStep says which part of a forwarded image an ImagePiece is.
type ImageStep uint8

// Steps of a forwarded image, in this order for each image: one begin, data
// windows (at least one), one end.
const (
	ImageBegin ImageStep = iota + 1
	ImageData
	ImageEnd
)

// ImagePiece is one step of an image forwarded in windows
// (ChatRequest.Forward) instead of whole in Event.Image.
type ImagePiece struct {
	Step ImageStep
	// MIME is the media type the image's bytes show (ImageBegin).
	MIME string
	// URL is set on ImageBegin for an image that is a link (a reseller's
	// hosted image): no data follows.
	URL string
	// Data is a window of the image's standard base64, checked against the
	// alphabet and unescaped (ImageData). It is valid until the next call to
	// Next.
	Data []byte
	// Signature is the image's thoughtSignature (ImageEnd), nil when none.
	Signature []byte
	// Digest is ImageDigest of the whole image (ImageEnd), when Digested:
	// ChatRequest.ForwardDigest asked for it.
	Digest   [32]byte
	Digested bool
}

// Head is what a forwarded answer knows of itself besides its events: the
// upstream's id ("" when it gave none before the answer was committed) and
// creation time (Unix seconds, 0 when unknown).
type Head interface {
	Head() (id string, created int64)
}

// Whole returns the answer behind a forwarded one that was read whole
// before it was handed over (an answer without images), so that it can be
// answered as a buffered one.
// The stream is then used up: the caller releases the Result instead of
// closing the stream. ok is false for an answer being forwarded.
func Whole(st Stream) (res *Result, ok bool) {
	switch s := st.(type) {
	case *resultStream:
		return s.res, true
	case *geminiForward:
		if s.whole != nil && s.err == nil {
			s.Close() // the Result points into the skeleton, not the connection
			return s.whole, true
		}
	case *openaiForward:
		if s.whole != nil && s.err == nil {
			s.Close()
			return s.whole, true
		}
	}
	return nil, false
}

// resultStream hands a whole Result out as the events of a forwarded answer:
// the answers a kind cannot forward in windows (and the ones with no image,
// which are small) look the same to the gateway as those it can.
type resultStream struct {
	res    *Result
	evs    []Event
	pieces []ImagePiece
	usage  Usage
	i      int
}

// newResultStream lays res out as events: for each choice its text and
// images in the model's order, then its finish reason; the usage last.
// digest: each image with a signature gets its digest.
func newResultStream(res *Result, digest bool) *resultStream {
	s := &resultStream{res: res, usage: res.Usage}
	nev, npc := 1, 0
	for ci := range res.Choices {
		c := &res.Choices[ci]
		nev += 2 + len(c.Pieces) + 2*len(c.Images) + b2i(c.Pieces == nil)
		npc += 3 * len(c.Images)
	}
	s.evs, s.pieces = make([]Event, 0, nev), make([]ImagePiece, 0, npc)
	piece := func(p ImagePiece) *ImagePiece {
		s.pieces = append(s.pieces, p)
		return &s.pieces[len(s.pieces)-1]
	}
	for ci := range res.Choices {
		s.evs = choiceEvents(s.evs, &res.Choices[ci], digest, piece)
	}
	s.evs = append(s.evs, Event{Usage: &s.usage})
	return s
}

// choiceEvents appends the events of choice c: its text and images in the
// model's order, then its finish reason. piece keeps an ImagePiece for the
// events to point to.
func choiceEvents(evs []Event, c *Choice, digest bool, piece func(ImagePiece) *ImagePiece) []Event {
	if len(c.Images) == 0 {
		return append(evs, Event{Choice: c.Index, Text: c.Text}, Event{Choice: c.Index, FinishReason: c.FinishReason})
	}
	if c.Pieces == nil && len(c.Text) > 0 {
		// Text first, then the images: what a markdown answer without
		// pieces shows.
		evs = append(evs, Event{Choice: c.Index, Text: c.Text})
	}
	for i := 0; ; i++ {
		p, ok := choicePiece(c, i)
		if !ok {
			break
		}
		evs = pieceEvents(evs, c, p, digest, piece)
	}
	return append(evs, Event{Choice: c.Index, FinishReason: c.FinishReason})
}

// choicePiece is the i-th piece of the content of a choice with images:
// of its pieces, or of its images when it has none.
func choicePiece(c *Choice, i int) (Piece, bool) {
	if c.Pieces != nil {
		if i >= len(c.Pieces) {
			return Piece{}, false
		}
		return c.Pieces[i], true
	}
	return Piece{Image: i}, i < len(c.Images)
}

// pieceEvents appends the events of piece p of choice c: its text, or its
// image's begin, data (none for a link) and end.
func pieceEvents(evs []Event, c *Choice, p Piece, digest bool, piece func(ImagePiece) *ImagePiece) []Event {
	if p.Text != nil {
		return append(evs, Event{Choice: c.Index, Text: p.Text})
	}
	if p.Image < 0 || p.Image >= len(c.Images) {
		return evs
	}
	img := &c.Images[p.Image]
	end := ImagePiece{Step: ImageEnd, Signature: img.Signature}
	if digest && len(img.Signature) > 0 {
		end.Digest, end.Digested = ImageDigest(img.B64)
	}
	evs = append(evs, Event{Choice: c.Index, Piece: piece(ImagePiece{Step: ImageBegin, MIME: img.MIME, URL: img.URL})})
	if img.URL == "" {
		evs = append(evs, Event{Choice: c.Index, Piece: piece(ImagePiece{Step: ImageData, Data: img.B64})})
	}
	return append(evs, Event{Choice: c.Index, Piece: piece(end)})
}

// Next implements Stream.
func (s *resultStream) Next() (*Event, error) {
	if s.i >= len(s.evs) {
		return nil, io.EOF
	}
	s.i++
	return &s.evs[s.i-1], nil
}

// Close implements Stream.
func (s *resultStream) Close() { s.res.Release() }

// Head implements Head.
func (s *resultStream) Head() (string, int64) { return s.res.ID, s.res.Created }

// b64Digest hashes the bytes a base64 image decodes to, fed in windows of
// any length: ImageDigest of the whole image, without holding it. Decoding
// and hashing megabytes is most of the CPU a forwarded image costs, so a
// window is hashed on a goroutine of its own (feed) while it is written to
// the client; wait says when the window may be reused.
type b64Digest struct {
	h     hash.Hash
	carry [4]byte
	nc    int
	buf   []byte
	bad   bool
	work  chan []byte
	done  chan struct{}
	busy  bool
}

func newB64Digest() *b64Digest {
	d := &b64Digest{h: sha256.New(), buf: make([]byte, digestChunk), work: make(chan []byte), done: make(chan struct{})}
	go func() {
		for b := range d.work {
			d.write(b)
			d.done <- struct{}{}
		}
	}()
	return d
}

// feed hashes b on the digest's goroutine; b must stay as it is until wait.
func (d *b64Digest) feed(b []byte) {
	d.wait()
	d.work <- b
	d.busy = true
}

// wait returns once the window fed last is hashed.
func (d *b64Digest) wait() {
	if d.busy {
		<-d.done
		d.busy = false
	}
}

// stop ends the digest's goroutine.
func (d *b64Digest) stop() {
	d.wait()
	close(d.work)
}

// write feeds a window of base64.
func (d *b64Digest) write(b []byte) {
	if d.bad {
		return
	}
	for d.nc > 0 && len(b) > 0 {
		d.carry[d.nc] = b[0]
		d.nc, b = d.nc+1, b[1:]
		if d.nc == 4 {
			d.nc = 0
			d.decode(d.carry[:])
		}
	}
	if d.nc > 0 {
		return // b is used up
	}
	n := len(b) - len(b)%4
	for i := 0; i < n && !d.bad; i += digestChunk {
		d.decode(b[i:min(i+digestChunk, n)])
	}
	d.nc = copy(d.carry[:], b[n:])
}

func (d *b64Digest) decode(b []byte) {
	m, err := base64.StdEncoding.Decode(d.buf, b)
	if err != nil {
		d.bad = true
		return
	}
	d.h.Write(d.buf[:m])
}

// sum is the digest, and stops the digest; ok is false when what was fed
// is not whole base64.
func (d *b64Digest) sum() (s [32]byte, ok bool) {
	d.stop()
	if d.bad || d.nc != 0 {
		return s, false
	}
	d.h.Sum(s[:0])
	return s, true
}

// checkOutputImage judges the start of a generated image's base64 (b64,
// which may be cut short of the image's end unless whole): the media type
// its bytes show (label when they show none of the known kinds), or why it
// is refused: a PNG, JPEG or WebP header that declares dimensions past the
// decompression-bomb limits, or that is damaged. more is true when b64 is
// not whole and too short to tell.
func checkOutputImage(label string, b64 []byte, whole bool) (mime, why string, more bool) {
	if !whole && len(b64) < base64.StdEncoding.EncodedLen(sniffBytes) {
		return "", "", true
	}
	kind := sniffB64(b64)
	mime = outputMIME(label, b64)
	switch kind {
	case "image/png", "image/jpeg", "image/webp":
	default:
		return mime, "", false
	}
	n := len(b64) - len(b64)%4
	var w, h int
	var err error
	if kind == "image/jpeg" {
		w, h, err = imageSize(kind, io.LimitReader(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(b64[:n])), maxHeaderBytes))
	} else {
		// PNG and WebP sizes sit in their first 30 bytes: decoded on the
		// stack.
		var head [33]byte
		k := min(n, 44)
		m, _ := base64.StdEncoding.Decode(head[:], b64[:k])
		w, h, err = headerSize(kind, head[:m])
	}
	switch {
	case err != nil && !whole && n < maxHeaderB64:
		return "", "", true
	case err != nil:
		return "", "upstream image header is damaged", false
	case w > MaxImageSide || h > MaxImageSide || int64(w)*int64(h) > MaxImagePixels:
		return "", "upstream image declares a size past the limits", false
	}
	return mime, "", false
}

// maxHeaderB64 is maxHeaderBytes in base64: the most of an image read
// ahead to find its dimensions.
var maxHeaderB64 = base64.StdEncoding.EncodedLen(maxHeaderBytes)

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
	stKind  // inside a value the kind reads itself (forwardKind.onStep)
)

// frame is one open container; for an object, its current key is
// skel[ks:ke].
type frame struct {
	obj    bool
	ks, ke int
}

// forwardKind is what a kind of answer adds to the walk of its JSON
// (gemini_forward.go, openai_forward.go): the walker calls it where a value
// begins or ends, its path (at) being that value's.
type forwardKind interface {
	// onValue is called as a value begins with c; true when the kind has
	// taken the value over (an image's data: startImage).
	onValue(c byte) bool
	// onScalar is called when a string or literal value was read whole
	// into skel[vs:].
	onScalar(vs int)
	// onClose is called when an object closed.
	onClose()
	// onImage is called when the image being read was judged good, before
	// its begin is queued: what comes before it in the answer is queued.
	onImage()
	// onImageEnd is called when the image's base64 ended; it sets the
	// walker's state.
	onImageEnd()
	// onStep reads on in the state stKind.
	onStep()
	// onEnd is called when the body ended after its JSON.
	onEnd()
}

// forwardWalk reads a JSON answer through a window (forwardWindow): what
// is not an image's base64 is kept, as it comes, in a skeleton; an image's
// base64 is checked (its end, the \/ escape, the base64 alphabet and
// padding, its header with checkOutputImage) and handed out window by
// window. Its kind (forwardKind) decides which strings are images and
// what the rest of the skeleton means. gemini_forward.go says when the
// answer is committed.
type forwardWalk struct {
	kind forwardKind
	name string             // the provider, for errors
	resp *upstream.Response // nil when reading a plain io.Reader (tests)
	br   *bufio.Reader
	max  int // MaxBodyBytes: bounds what is read in all
	read int

	skel  []byte
	stack []frame
	st    int

	queue []Event
	qi    int
	// drop is how much of br's buffer the last window handed out holds.
	drop int

	// committed: events may be handed out.
	committed bool
	done      bool
	err       error

	// The image being read: the choice its events go to, the byte that
	// ends it, the media type its answer labels it with, its base64
	// validity, the head read ahead before it is judged, and its digest.
	choice int
	term   byte
	// pause, when not 0, is a byte that ends the image's string before
	// its base64 ends (a stream's markdown image that goes on in a later
	// event): the image is left paused (paused, onImageEnd), the byte
	// unread.
	pause  byte
	paused bool
	label  string
	b64n   int
	pad    int
	skip   bool // the data is not an image of the answer: checked, not forwarded
	// judging: the head is read ahead, not handed out yet.
	judging bool
	head    []byte
	headAt  int // len(head) when it was last judged
	dig     *b64Digest
	unesc   []byte
	win     ImagePiece // the window handed out
}

// init starts a walk of body for kind.
func (f *forwardWalk) init(kind forwardKind, name string, resp *upstream.Response, body io.Reader, max int) {
	br := forwardReaders.Get().(*bufio.Reader)
	br.Reset(body)
	*f = forwardWalk{kind: kind, name: name, resp: resp, br: br, max: max, skel: make([]byte, 0, 1024)}
}

// Close implements Stream.
func (f *forwardWalk) Close() {
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
func (f *forwardWalk) Next() (*Event, error) {
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
func (f *forwardWalk) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

func (f *forwardWalk) invalid(msg string) {
	f.fail(&Error{Provider: f.name, Kind: KindInvalidResponse, Status: 200, Message: msg})
}

// count adds n bytes to what was read, and fails past the bound.
func (f *forwardWalk) count(n int) bool {
	if f.read += n; f.read > f.max {
		f.fail(&Error{Provider: f.name, Kind: KindInvalidResponse, Status: 200, Message: "upstream answer too large", Err: upstream.ErrBodyTooLarge})
		return false
	}
	return true
}

// readErr reports a failed read of the body: cut short or dropped.
func (f *forwardWalk) readErr(err error) {
	if err == io.EOF {
		f.invalid("upstream answer ends before its JSON does")
		return
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		f.fail(&Error{Provider: f.name, Kind: KindTransport, Status: 200, Message: "upstream connection dropped mid-answer", Err: err})
		return
	}
	f.fail(transportError(f.name, err))
}

// endWhole ends an answer read whole before any image was cut out of it:
// res is the buffered reading of its skeleton, handed out as its events;
// nil when that reading failed (err).
func (f *forwardWalk) endWhole(res *Result, err error) *Result {
	if err != nil {
		f.fail(err)
		return nil
	}
	f.queue = append(f.queue[:0], newResultStream(res, false).evs...)
	f.done = true
	return res
}

// step advances until it has queued events past the commit, the answer
// ended, or it failed.
func (f *forwardWalk) step() {
	if f.drop > 0 {
		f.discard(f.drop)
		f.drop = 0
	}
	for f.err == nil && !f.done && !(f.committed && len(f.queue) > 0) {
		switch f.st {
		case stImage:
			f.imageStep()
			continue
		case stKind:
			f.kind.onStep()
			continue
		}
		c, err := f.br.ReadByte()
		if err != nil {
			if err == io.EOF && f.st == stEnd {
				f.kind.onEnd()
				return
			}
			f.readErr(err)
			return
		}
		if !f.count(1) {
			return
		}
		if c == ' ' || c == '\n' || c == '\r' || c == '\t' {
			continue
		}
		f.token(c)
	}
}

// token moves the walker on by one significant byte c outside strings.
func (f *forwardWalk) token(c byte) {
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
func (f *forwardWalk) value(c byte) {
	if f.kind.onValue(c) || f.err != nil {
		return
	}
	switch c {
	case '{', '[':
		if len(f.stack) >= maxJSONDepth {
			f.invalid("upstream answer nests too deep")
			return
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
		vs := len(f.skel)
		if !f.str() {
			return
		}
		f.kind.onScalar(vs)
	default:
		vs := len(f.skel)
		f.skel = append(f.skel, c)
		for {
			b, err := f.br.Peek(1)
			if err != nil || !literalByte(b[0]) {
				break
			}
			f.br.Discard(1)
			if !f.count(1) {
				return
			}
			f.skel = append(f.skel, b[0])
		}
		f.kind.onScalar(vs)
	}
	f.after()
}

func literalByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '+' || c == '.'
}

// after sets the state that follows a complete value.
func (f *forwardWalk) after() {
	if len(f.stack) == 0 {
		f.st = stEnd
	} else {
		f.st = stAfter
	}
}

// str copies the rest of a string whose opening quote was read into the
// skeleton, quotes included. It reports false when it failed.
func (f *forwardWalk) str() bool {
	f.skel = append(f.skel, '"')
	for {
		b, err := f.br.ReadSlice('"')
		if !f.count(len(b)) {
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
		if !escapedQuote(f.skel) {
			return true
		}
	}
}

// escapedQuote reports whether the quote that ends b is escaped: an odd
// run of backslashes precedes it.
func escapedQuote(b []byte) bool {
	bs := 0
	for i := len(b) - 2; i >= 0 && b[i] == '\\'; i-- {
		bs++
	}
	return bs%2 == 1
}

// close closes the innermost container with c.
func (f *forwardWalk) close(c byte) {
	top := f.stack[len(f.stack)-1]
	if top.obj != (c == '}') {
		f.invalid("upstream answer is not JSON")
		return
	}
	f.skel = append(f.skel, c)
	f.stack = f.stack[:len(f.stack)-1]
	if c == '}' {
		f.kind.onClose()
	}
	f.after()
}

// at reports whether the value being read sits at path; "[]" is an array
// element.
func (f *forwardWalk) at(path []string) bool {
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
func (f *forwardWalk) emit(ev Event) { f.queue = append(f.queue, ev) }

// startImage begins reading an image's base64, up to term (which is
// consumed). skip: it is checked, not forwarded; digest: its digest is
// computed.
func (f *forwardWalk) startImage(skip bool, term byte, digest bool) {
	f.st = stImage
	f.term = term
	f.b64n, f.pad, f.head, f.headAt = 0, 0, nil, 0
	f.skip = skip
	f.judging = !skip
	if f.dig != nil {
		f.dig.stop() // a part with a second data member
	}
	f.dig = nil
	if !skip && digest {
		f.dig = newB64Digest()
	}
}

// imageStep reads one window of an image's base64: until the head is
// judged it is kept (head), then each window is queued as it is.
func (f *forwardWalk) imageStep() {
	first := f.judging && f.head == nil
	// Each look takes as much of the image as the window holds: the first
	// to judge its head in place, the others so that each write to the
	// client carries a full window.
	w, err := f.br.Peek(f.br.Size())
	if len(w) == 0 || first && err != nil && bytes.IndexByte(w, f.term) < 0 && (f.pause == 0 || bytes.IndexByte(w, f.pause) < 0) {
		f.readErr(err)
		return
	}
	if w[0] == '\\' && len(w) < 2 {
		if w, err = f.br.Peek(2); err != nil {
			f.readErr(err)
			return
		}
	}
	end := bytes.IndexByte(w, f.term)
	n := end
	if end < 0 {
		n = len(w)
	}
	f.paused = false
	if f.pause != 0 {
		if k := bytes.IndexByte(w[:n], f.pause); k >= 0 {
			end, n, f.paused = k, k, true
		}
	}
	data, used, ok := f.checkB64(w[:n], end >= 0)
	if !ok {
		f.invalid("upstream image is not valid base64")
		return
	}
	closed := end >= 0 && used == n
	// eat: the terminator is consumed; a pause byte is left to the kind.
	eat := used + b2i(closed && !f.paused)
	if !f.count(eat) {
		return
	}
	if closed && !f.paused && (f.b64n == 0 || f.b64n%4 != 0) {
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
		f.discard(eat)
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
		f.discard(eat)
		f.judge(closed && !f.paused)
	case len(data) == 0:
		f.discard(eat)
	default:
		// A window handed out as it lies in the read buffer: what was
		// read ahead goes out with it, and the answer is committed.
		// Once committed, one window at a time is queued: its piece is
		// reused.
		f.committed = true
		f.win = ImagePiece{Step: ImageData, Data: data}
		f.emit(Event{Choice: f.choice, Piece: &f.win})
		f.drop = eat
	}
	if closed && f.err == nil {
		f.kind.onImageEnd()
	}
}

// discard moves the read window on by n, once the digest is done with it.
func (f *forwardWalk) discard(n int) {
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
func (f *forwardWalk) judge(whole bool) {
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
func (f *forwardWalk) begin(mime string, first []byte) {
	f.kind.onImage()
	if f.err != nil {
		return
	}
	f.emit(Event{Choice: f.choice, Piece: &ImagePiece{Step: ImageBegin, MIME: mime}})
	f.emit(Event{Choice: f.choice, Piece: &ImagePiece{Step: ImageData, Data: first}})
	f.judging = false
}

// checkB64 checks a window of an image string (the part before its
// terminator, if the window holds it) and returns its base64, unescaped,
// and how much of w it used: a window that ends inside an escape stops
// before it.
func (f *forwardWalk) checkB64(w []byte, terminated bool) (data []byte, used int, ok bool) {
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
				if terminated {
					return nil, 0, false // an escaped terminator
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
