package openai

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"go.uber.org/zap"

	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// ForwardEvents is a non-stream answer as it arrives (gateway's
// ForwardAnswer): the events of a stream, images in pieces.
type ForwardEvents interface {
	Events
	// Head is the upstream's id and creation time, "" and 0 when unknown.
	Head() (id string, created int64)
}

// Forwards reports whether answers in format f can be forwarded as they
// arrive; links: the answer's images become links (offload). The images
// format's content (all the text) comes before the images, and text may
// follow an image, so each choice is held until it ends: that costs
// nothing when its images are links, and would hold every image when they
// are inline.
func Forwards(f Format, links bool) bool { return f != FormatImages || links }

// ForwardOptions are the fixed parts of a forwarded answer.
type ForwardOptions struct {
	// ReqID makes the answer's id when the upstream gave none of OpenAI's
	// shape.
	ReqID  string
	Model  string
	Format Format
	// ImagesAPI renders the Images API's response (one b64_json or url
	// per image, its usage) instead of a chat.completion; ReqID, Model and
	// Format are then unused.
	ImagesAPI bool
	// Cancel ends the upstream call; OnDone runs once when the answer is
	// over (closed by then).
	Cancel func()
	OnDone func(StreamSummary)
	// Log gets a panic of the relay; nil: not logged.
	Log *zap.Logger
}

// ForwardBody writes a chat.completion as its answer arrives: the same
// bytes NewChatBody writes for the whole answer, with each image's base64
// written window by window as the upstream sends it. fasthttp calls WriteTo
// on its connection goroutine after the handler returned. An answer that
// breaks half-way ends the response without completing its JSON (WriteTo
// returns an error, so the connection closes without the final chunk): the
// status is out, and a cut body is the failure a client's parser reports.
type ForwardBody struct {
	fa ForwardEvents
	o  ForwardOptions
	s  segs // only small is used: the bytes not yet written

	headOut bool
	choices int // choices begun
	// The open choice: its index, whether it is written (an image came),
	// its text until then, and its images so far.
	open     bool
	choice   int
	writing  bool
	text     []byte
	images   int
	prevText bool
	finish   string
	closed   bool
	written  int64
	// whole: Prefetch rendered the whole answer; held: the image window
	// Prefetch stopped at, to be written first.
	whole bool
	held  []byte
	// imgs are the images of the open choice in the images format, held
	// with its text until it ends: links, or the data URL of an image the
	// store refused.
	imgs []provider.Image
	data []byte
}

// Prefetch renders the start of the answer in memory, until it is whole
// (true: Len is its size, and it goes out with a Content-Length, as a
// buffered answer does) or past limit bytes. An error here comes before
// anything was written: the client can still get an error status (Abort).
func (b *ForwardBody) Prefetch(limit int) (whole bool, err error) {
	for {
		ev, err := b.fa.Next()
		if err == io.EOF {
			b.end()
			b.whole = true
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if b.streams(ev) {
			if len(b.s.small)+len(ev.Piece.Data) > limit {
				// Written straight from the upstream window by WriteTo,
				// before it reads on.
				b.held = ev.Piece.Data
				return false, nil
			}
			b.s.small = append(b.s.small, ev.Piece.Data...)
			continue
		}
		b.event(ev)
	}
}

// Len is the size of an answer Prefetch rendered whole.
func (b *ForwardBody) Len() int { return len(b.s.small) }

// Abort closes an answer whose Prefetch failed: err is how it ended.
func (b *ForwardBody) Abort(err error) { b.done(StreamSummary{Err: err}) }

// NewForwardBody prepares the forwarding of fa.
func NewForwardBody(fa ForwardEvents, o ForwardOptions) *ForwardBody {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	b := &ForwardBody{fa: fa, o: o}
	b.s.small = make([]byte, 0, 1024)
	return b
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo.
func (b *ForwardBody) SupportsBodyWriteTo() bool { return true }

// Read is never used by fasthttp (WriteTo is); it exists for io.Reader.
func (b *ForwardBody) Read(p []byte) (int, error) { return 0, io.EOF }

// Close ends the upstream call if WriteTo never ran (the client left first).
func (b *ForwardBody) Close() error {
	b.done(StreamSummary{ClientGone: true})
	return nil
}

// done closes the answer (which bills it) and reports how it ended, once.
func (b *ForwardBody) done(sum StreamSummary) {
	if b.closed {
		return
	}
	b.closed = true
	b.fa.Close()
	if b.o.Cancel != nil {
		b.o.Cancel()
	}
	sum.Usage = b.fa.Usage()
	if sum.FinishReason == "" {
		sum.FinishReason = b.finish
	}
	if b.o.OnDone != nil {
		b.o.OnDone(sum)
	}
}

// errBroken is what WriteTo returns for an answer cut after its commit.
var errBroken = errors.New("upstream answer broke after it was committed")

// WriteTo writes the answer as it arrives.
func (b *ForwardBody) WriteTo(w io.Writer) (n int64, err error) {
	defer func() {
		if v := recover(); v != nil {
			b.o.Log.Error("forward relay panic", zap.String("panic_type", fmt.Sprintf("%T", v)), zap.Stack("stack"))
			b.done(StreamSummary{Err: errors.New("internal error in the answer relay")})
			n, err = b.written, errClient
		}
	}()
	if b.whole || b.held != nil {
		err := b.flush(w)
		if err == nil && b.held != nil {
			err = b.write(w, b.held)
			b.held = nil
		}
		if err != nil {
			b.done(StreamSummary{ClientGone: true})
			return b.written, err
		}
		if b.whole {
			b.done(StreamSummary{})
			return b.written, nil
		}
	}
	for {
		ev, err := b.fa.Next()
		if err == io.EOF {
			b.end()
			if err := b.flush(w); err != nil {
				b.done(StreamSummary{ClientGone: true})
				return b.written, err
			}
			b.done(StreamSummary{})
			return b.written, nil
		}
		if err != nil {
			// What is buffered goes out, the end of the JSON never does.
			b.flush(w)
			b.done(StreamSummary{Err: err})
			return b.written, errBroken
		}
		if b.streams(ev) {
			err = b.flush(w)
			if err == nil {
				err = b.write(w, ev.Piece.Data)
			}
			if err != nil {
				b.done(StreamSummary{ClientGone: true})
				return b.written, err
			}
			continue
		}
		b.event(ev)
	}
}

func (b *ForwardBody) write(w io.Writer, p []byte) error {
	k, err := w.Write(p)
	b.written += int64(k)
	return err
}

// flush writes the small bytes rendered so far.
func (b *ForwardBody) flush(w io.Writer) error {
	if len(b.s.small) == 0 {
		return nil
	}
	err := b.write(w, b.s.small)
	b.s.small = b.s.small[:0]
	return err
}

// head writes the answer's start, once.
func (b *ForwardBody) head() {
	if b.headOut {
		return
	}
	b.headOut = true
	id, created := b.fa.Head()
	if created == 0 {
		created = time.Now().Unix()
	}
	if b.o.ImagesAPI {
		b.s.small = appendImagesHead(b.s.small, created)
		return
	}
	b.s.small = appendChatHead(b.s.small, chatID(id, b.o.ReqID), created, b.o.Model)
}

// streams reports whether ev is image data written as it comes (every
// format but images).
func (b *ForwardBody) streams(ev *provider.Event) bool {
	return ev.Piece != nil && ev.Piece.Step == provider.ImageData && (b.o.Format != FormatImages || b.o.ImagesAPI)
}

// event renders one event other than image data that streams.
func (b *ForwardBody) event(ev *provider.Event) {
	if ev.Usage != nil {
		return // the gateway's bill is read at the end
	}
	if b.o.ImagesAPI {
		if ev.Piece != nil {
			b.apiImage(ev.Piece)
		}
		return // the Images API answers images alone
	}
	if !b.open || ev.Choice != b.choice {
		b.open, b.choice, b.writing, b.text, b.images, b.prevText = true, ev.Choice, false, b.text[:0], 0, false
		b.imgs = b.imgs[:0]
	}
	switch {
	case ev.Piece != nil:
		b.image(ev.Piece)
	case ev.FinishReason != "":
		b.endChoice(ev.FinishReason)
	case !b.writing:
		b.text = append(b.text, ev.Text...)
	case b.o.Format == FormatMarkdown && len(ev.Text) > 0:
		if !b.prevText {
			b.s.small = append(b.s.small, `\n\n`...)
		}
		b.s.small = append(b.s.small, ev.Text...)
		b.prevText = true
	}
}

// image renders the begin or end of an image (its data is written as it
// is), or in the images format holds it.
func (b *ForwardBody) image(p *provider.ImagePiece) {
	if b.o.Format == FormatImages {
		b.holdImage(p)
		return
	}
	s := &b.s
	markdown := b.o.Format == FormatMarkdown
	if p.Step == provider.ImageEnd {
		switch {
		case markdown:
			s.small = append(s.small, ')')
		case b.images == 1:
			s.small = append(s.small, '"')
		default:
			s.small = append(s.small, `"}}`...)
		}
		return
	}
	if p.Step != provider.ImageBegin {
		return
	}
	if !b.writing {
		b.writing = true
		b.head()
		if b.choices > 0 {
			s.small = append(s.small, ',')
		}
		b.choices++
		s.small = append(s.small, `{"index":`...)
		s.small = strconv.AppendInt(s.small, int64(b.choice), 10)
		s.small = append(s.small, `,"message":{"role":"assistant","content":"`...)
		if markdown {
			s.small = append(s.small, b.text...)
			b.prevText = len(b.text) > 0
		}
	}
	b.images++
	switch {
	case markdown:
		if b.images > 1 || b.prevText {
			s.small = append(s.small, `\n\n`...)
		}
		s.small = append(s.small, "![image]("...)
		b.prevText = false
	case b.images == 2:
		s.small = append(s.small, `,"images":[{"type":"image_url","image_url":{"url":"`...)
	case b.images > 2:
		s.small = append(s.small, `,{"type":"image_url","image_url":{"url":"`...)
	}
	if p.URL != "" {
		s.small = appendEscaped(s.small, p.URL)
		return
	}
	s.small = appendDataURLStart(s.small, p.MIME)
}

// holdImage keeps an image of the images format until its choice ends.
func (b *ForwardBody) holdImage(p *provider.ImagePiece) {
	switch {
	case p.Step == provider.ImageBegin && p.URL != "":
		b.imgs = append(b.imgs, provider.Image{MIME: p.MIME, URL: p.URL})
	case p.Step == provider.ImageBegin:
		b.data = appendDataURLStart(b.data[:0], p.MIME)
	case p.Step == provider.ImageData:
		b.data = append(b.data, p.Data...)
	case p.Step == provider.ImageEnd && len(b.data) > 0:
		b.imgs = append(b.imgs, provider.Image{URL: string(b.data)})
		b.data = b.data[:0]
	}
}

// endChoice closes the open choice: one with images is written already,
// one without is written whole now, as NewChatBody writes it.
func (b *ForwardBody) endChoice(finish string) {
	if b.finish == "" {
		b.finish = finish
	}
	b.open = false
	if !b.writing {
		b.head()
		if b.choices > 0 {
			b.s.small = append(b.s.small, ',')
		}
		b.choices++
		c := provider.Choice{Index: b.choice, Text: b.text, Images: b.imgs, FinishReason: finish}
		renderChoice(&b.s, 0, &c, b.o.Format)
		return
	}
	switch {
	case b.o.Format == FormatMarkdown:
		b.s.small = append(b.s.small, '"')
	case b.images > 1:
		b.s.small = append(b.s.small, ']')
	}
	b.s.small = append(b.s.small, `,"refusal":null`...)
	appendChoiceEnd(&b.s, 0, finish)
}

// apiImage renders the begin or end of an image of the Images API's
// response (its data is written as it is).
func (b *ForwardBody) apiImage(p *provider.ImagePiece) {
	switch p.Step {
	case provider.ImageBegin:
		b.head()
		if b.images > 0 {
			b.s.small = append(b.s.small, ',')
		}
		b.images++
		if p.URL != "" {
			b.s.small = append(b.s.small, `{"url":`...)
			b.s.small = jsonx.AppendString(b.s.small, p.URL)
			b.writing = false // a link: nothing follows until its end
			return
		}
		b.s.small = append(b.s.small, `{"b64_json":"`...)
		b.writing = true
	case provider.ImageEnd:
		if b.writing {
			b.s.small = append(b.s.small, '"')
		}
		b.s.small = append(b.s.small, '}')
	}
}

// end writes what follows the last choice (the last image).
func (b *ForwardBody) end() {
	b.head()
	if b.o.ImagesAPI {
		b.s.small = appendImagesTail(b.s.small, b.fa.Usage(), b.fa.PromptImageTokens())
		return
	}
	b.s.small = appendChatTail(b.s.small, b.fa.Usage(), b.fa.PromptImageTokens())
}
