package openai

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"go.uber.org/zap"

	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// StreamSummary is how a stream ended, for the request log.
type StreamSummary struct {
	Usage        gateway.Usage
	FinishReason string
	// Err is the upstream failure that cut the stream, if any.
	Err error
	// ClientGone is set when writing to the client failed.
	ClientGone bool
}

// Events is a stream of one answer as the relay reads it: gateway's
// StreamAnswer, with the journey applied to each event as it passes.
type Events interface {
	// Next returns the next event, io.EOF at the end.
	Next() (*provider.Event, error)
	// Usage is what the stream has billed so far.
	Usage() gateway.Usage
	// PromptImageTokens is the upstream's count of input image tokens.
	PromptImageTokens() int64
	// Close ends the stream and bills it.
	Close()
}

// StreamOptions are the fixed parts of a relayed stream.
type StreamOptions struct {
	// ID, Created and Model go in every chunk.
	ID      string
	Created int64
	Model   string
	Format  Format
	// IncludeUsage is stream_options.include_usage: a last chunk with
	// usage, and "usage":null in the others.
	IncludeUsage bool
	// Cancel ends the upstream call; OnDone runs once when the stream is
	// over (the answer is closed by then).
	Cancel func()
	OnDone func(StreamSummary)
	// Log gets a panic of the relay; nil: not logged.
	Log *zap.Logger
}

// StreamBody relays a stream of events to the client as OpenAI
// chat.completion.chunk events. fasthttp calls WriteTo on its connection
// goroutine after the handler returned; every Write is one flushed HTTP chunk,
// so each event reaches the client as it arrives and a client that left shows
// as a failed write, which ends the upstream call.
type StreamBody struct {
	sa     Events
	o      StreamOptions
	prefix []byte // `{"id":..,"choices":[`
	buf    []byte

	roleSent [provider.MaxN]bool
	sent     [provider.MaxN]bool // some content went out for the choice
	newlines [provider.MaxN]int  // escaped newlines at the end of the content sent
	held     [provider.MaxN][]byte
	hasImage [provider.MaxN]bool
	suffix   string // closes the chunk of the image being relayed in pieces
	finish   string
	closed   bool
}

// NewStreamBody prepares the relay of sa.
func NewStreamBody(sa Events, o StreamOptions) *StreamBody {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	b := &StreamBody{sa: sa, o: o}
	p := make([]byte, 0, 160)
	p = append(p, `{"id":`...)
	p = jsonx.AppendString(p, o.ID)
	p = append(p, `,"object":"chat.completion.chunk","created":`...)
	p = strconv.AppendInt(p, o.Created, 10)
	p = append(p, `,"model":`...)
	p = jsonx.AppendString(p, o.Model)
	p = append(p, `,"choices":[`...)
	b.prefix = p
	b.buf = make([]byte, 0, 1024)
	return b
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo.
func (b *StreamBody) SupportsBodyWriteTo() bool { return true }

// Read is never used by fasthttp (WriteTo is); it exists for io.Reader.
func (b *StreamBody) Read(p []byte) (int, error) { return 0, io.EOF }

// Close ends the upstream call if WriteTo never ran (the client left first).
func (b *StreamBody) Close() error {
	b.finishStream(StreamSummary{ClientGone: true})
	return nil
}

// finishStream closes the answer (which bills what the stream made) and
// reports how it ended, once.
func (b *StreamBody) finishStream(sum StreamSummary) {
	if b.closed {
		return
	}
	b.closed = true
	b.sa.Close()
	if b.o.Cancel != nil {
		b.o.Cancel()
	}
	sum.Usage = b.sa.Usage()
	if sum.FinishReason == "" {
		sum.FinishReason = b.finish
	}
	if b.o.OnDone != nil {
		b.o.OnDone(sum)
	}
}

var errClient = errors.New("client write failed")

// WriteTo relays the stream until it ends.
func (b *StreamBody) WriteTo(w io.Writer) (n int64, err error) {
	// This runs on fasthttp's connection goroutine, outside the handler's
	// recovery: a panic here must not take the process down.
	defer func() {
		if v := recover(); v != nil {
			b.o.Log.Error("stream relay panic", zap.String("panic_type", fmt.Sprintf("%T", v)), zap.Stack("stack"))
			b.finishStream(StreamSummary{Err: errors.New("internal error in the stream relay")})
			err = errClient
		}
	}()
	var total int64
	write := func(p []byte) error {
		n, err := w.Write(p)
		total += int64(n)
		if err != nil {
			return errClient
		}
		return nil
	}
	err = b.relay(write)
	switch {
	case err == nil:
		b.finishStream(StreamSummary{})
		return total, nil
	case errors.Is(err, errClient):
		b.finishStream(StreamSummary{ClientGone: true})
		return total, err
	}
	// The stream broke after it started: tell the client in OpenAI's stream
	// error shape (SDKs raise it) and end the stream cleanly.
	b.buf = appendStreamError(b.buf[:0], err)
	werr := write(b.buf)
	if werr == nil {
		werr = write([]byte("data: [DONE]\n\n"))
	}
	b.finishStream(StreamSummary{Err: err, ClientGone: werr != nil})
	return total, nil
}

func appendStreamError(b []byte, err error) []byte {
	msg := "the upstream stream failed"
	if pe, ok := provider.AsError(err); ok {
		msg = "upstream " + pe.Provider + " failed mid-stream: " + pe.Message
	}
	b = append(b, `data: {"error":{"message":`...)
	b = jsonx.AppendString(b, msg)
	return append(b, `,"type":"server_error","param":null,"code":"upstream_error"}}`+"\n\n"...)
}

func (b *StreamBody) relay(write func([]byte) error) error {
	for {
		ev, err := b.sa.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := b.event(ev, write); err != nil {
			return err
		}
	}
	for c := range b.held {
		if len(b.held[c]) > 0 {
			if err := b.text(c, b.held[c], write); err != nil {
				return err
			}
		}
	}
	if b.o.IncludeUsage {
		b.buf = append(b.buf[:0], "data: "...)
		b.buf = append(b.buf, b.prefix...)
		b.buf = append(b.buf, `],"usage":`...)
		b.buf = appendUsage(b.buf, b.sa.Usage(), b.sa.PromptImageTokens())
		b.buf = append(b.buf, "}\n\n"...)
		if err := write(b.buf); err != nil {
			return err
		}
	}
	return write([]byte("data: [DONE]\n\n"))
}

// chunkStart begins `data: {...,"choices":[{"index":c,"delta":`.
func (b *StreamBody) chunkStart(c int) {
	b.buf = append(b.buf[:0], "data: "...)
	b.buf = append(b.buf, b.prefix...)
	b.buf = append(b.buf, `{"index":`...)
	b.buf = strconv.AppendInt(b.buf, int64(c), 10)
	b.buf = append(b.buf, `,"delta":`...)
}

// chunkEnd closes a chunk opened by chunkStart after its delta.
func (b *StreamBody) chunkEnd(dst []byte, finish string) []byte {
	dst = append(dst, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		dst = append(dst, "null"...)
	} else {
		dst = jsonx.AppendString(dst, finish)
	}
	dst = append(dst, '}', ']')
	if b.o.IncludeUsage {
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, "}\n\n"...)
}

func (b *StreamBody) role(c int, write func([]byte) error) error {
	if b.roleSent[c] {
		return nil
	}
	b.roleSent[c] = true
	b.chunkStart(c)
	b.buf = append(b.buf, `{"role":"assistant","content":"","refusal":null}`...)
	b.buf = b.chunkEnd(b.buf, "")
	return write(b.buf)
}

func (b *StreamBody) event(ev *provider.Event, write func([]byte) error) error {
	c := ev.Choice
	if c < 0 || c >= provider.MaxN {
		c = 0
	}
	switch {
	case ev.Usage != nil:
		return nil // the answer keeps it
	case ev.Text != nil && ev.Refusal:
		return b.refusal(c, ev.Text, write)
	case ev.Text != nil:
		if b.o.Format == FormatDataURL {
			// content will be the image's data URL; text is only sent if no
			// image comes.
			b.held[c] = append(b.held[c], ev.Text...)
			return nil
		}
		return b.text(c, ev.Text, write)
	case ev.Image != nil:
		return b.image(c, ev.Image, write)
	case ev.Piece != nil:
		return b.piece(c, ev.Piece, write)
	case ev.FinishReason != "":
		if err := b.role(c, write); err != nil {
			return err
		}
		if len(b.held[c]) > 0 && !b.hasImage[c] {
			if err := b.text(c, b.held[c], write); err != nil {
				return err
			}
		}
		b.held[c] = b.held[c][:0]
		b.finish = ev.FinishReason
		b.chunkStart(c)
		b.buf = append(b.buf, "{}"...)
		b.buf = b.chunkEnd(b.buf, ev.FinishReason)
		return write(b.buf)
	}
	return nil
}

func (b *StreamBody) text(c int, t []byte, write func([]byte) error) error {
	if len(t) == 0 {
		return nil
	}
	if err := b.role(c, write); err != nil {
		return err
	}
	b.chunkStart(c)
	b.buf = append(b.buf, `{"content":"`...)
	b.buf = append(b.buf, t...)
	b.buf = append(b.buf, `"}`...)
	b.buf = b.chunkEnd(b.buf, "")
	b.newlines[c] = trailingNewlines(t, b.newlines[c])
	b.sent[c] = true
	return write(b.buf)
}

// refusal sends the reason of a safety block as OpenAI streams a refusal:
// in delta.refusal, not in content.
func (b *StreamBody) refusal(c int, t []byte, write func([]byte) error) error {
	if err := b.role(c, write); err != nil {
		return err
	}
	b.chunkStart(c)
	b.buf = append(b.buf, `{"refusal":"`...)
	b.buf = append(b.buf, trimEscapedBreaks(t)...)
	b.buf = append(b.buf, `"}`...)
	b.buf = b.chunkEnd(b.buf, "")
	return write(b.buf)
}

// trimEscapedBreaks drops the escaped blank lines that separate a notice
// from text before it: a refusal stands on its own.
func trimEscapedBreaks(t []byte) []byte {
	for len(t) >= 2 && t[0] == '\\' && t[1] == 'n' {
		t = t[2:]
	}
	return t
}

// trailingNewlines counts escaped newlines ("\n") ending t; prev carries the
// count over when t is all newlines.
func trailingNewlines(t []byte, prev int) int {
	n := 0
	for len(t) >= 2 && bytes.HasSuffix(t, []byte(`\n`)) {
		n++
		t = t[:len(t)-2]
	}
	if len(t) == 0 {
		return prev + n
	}
	return n
}

func (b *StreamBody) image(c int, img *provider.Image, write func([]byte) error) error {
	suffix, err := b.imageStart(c, img.URL, img.MIME, write)
	if err != nil {
		return err
	}
	if img.URL == "" {
		if err := write(img.B64); err != nil {
			return err
		}
	}
	return b.imageEnd(suffix, write)
}

// piece relays an image that comes in windows (provider.ImagePiece): the
// same bytes as image writes for the whole image, window by window, so an
// image in flight holds a window. The chunk's JSON is open between the
// image's begin and end.
func (b *StreamBody) piece(c int, p *provider.ImagePiece, write func([]byte) error) error {
	switch p.Step {
	case provider.ImageBegin:
		suffix, err := b.imageStart(c, p.URL, p.MIME, write)
		b.suffix = suffix
		return err
	case provider.ImageData:
		return write(p.Data)
	case provider.ImageEnd:
		return b.imageEnd(b.suffix, write)
	}
	return nil
}

// imageStart writes the start of the chunk that carries an image, up to
// where its data URL's base64 goes (a link: the link too, then nothing is
// written yet), and returns what closes the chunk's delta.
func (b *StreamBody) imageStart(c int, url, mime string, write func([]byte) error) (string, error) {
	if err := b.role(c, write); err != nil {
		return "", err
	}
	b.chunkStart(c)
	first := !b.hasImage[c]
	b.hasImage[c] = true
	var suffix string
	switch {
	case b.o.Format == FormatMarkdown:
		b.buf = append(b.buf, `{"content":"`...)
		// Each image is a paragraph of its own, as in a non-stream answer.
		if b.sent[c] {
			for i := b.newlines[c]; i < 2; i++ {
				b.buf = append(b.buf, `\n`...)
			}
		}
		b.buf = append(b.buf, "![image]("...)
		suffix = `)"}`
		b.sent[c], b.newlines[c] = true, 0
	case b.o.Format == FormatDataURL && first:
		b.buf = append(b.buf, `{"content":"`...)
		suffix = `"}`
	default:
		b.buf = append(b.buf, `{"images":[{"type":"image_url","image_url":{"url":"`...)
		suffix = `"}}]}`
	}
	if url != "" {
		b.buf = appendEscaped(b.buf, url)
		return suffix, nil // written with the suffix
	}
	b.buf = appendDataURLStart(b.buf, mime)
	err := write(b.buf)
	b.buf = b.buf[:0]
	return suffix, err
}

// imageEnd closes the chunk imageStart opened.
func (b *StreamBody) imageEnd(suffix string, write func([]byte) error) error {
	b.buf = append(b.buf, suffix...)
	b.buf = b.chunkEnd(b.buf, "")
	return write(b.buf)
}
