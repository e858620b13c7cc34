package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"go.uber.org/zap"

	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// StreamSummary is how a stream ended, for the request log and accounting.
type StreamSummary struct {
	Usage        Usage
	FinishReason string
	// Err is the upstream failure that cut the stream, if any.
	Err error
	// ClientGone is set when writing to the client failed.
	ClientGone bool
}

// StreamBody relays a provider stream to the client as OpenAI
// chat.completion.chunk events. fasthttp calls WriteTo on its connection
// goroutine after the handler returned; every Write is one flushed HTTP chunk,
// so each event reaches the client as it arrives and a client that left shows
// as a failed write, which ends the upstream call.
type StreamBody struct {
	g            *Gateway
	sa           *StreamAnswer
	format       Format
	includeUsage bool
	prefix       []byte // `{"id":..,"choices":[`
	buf          []byte
	onDone       func(StreamSummary)
	cancel       func()

	roleSent [provider.MaxN]bool
	sent     [provider.MaxN]bool // some content went out for the choice
	newlines [provider.MaxN]int  // escaped newlines at the end of the content sent
	held     [provider.MaxN][]byte
	hasImage [provider.MaxN]bool
	images   int
	upUsage  provider.Usage
	finish   string
	closed   bool
}

// NewStreamBody prepares the relay of sa. cancel ends the upstream call;
// onDone runs once when the stream is over.
func (g *Gateway) NewStreamBody(sa *StreamAnswer, id string, created int64, model string, f Format, includeUsage bool, cancel func(), onDone func(StreamSummary)) *StreamBody {
	b := &StreamBody{g: g, sa: sa, format: f, includeUsage: includeUsage, cancel: cancel, onDone: onDone}
	p := make([]byte, 0, 160)
	p = append(p, `{"id":`...)
	p = jsonx.AppendString(p, id)
	p = append(p, `,"object":"chat.completion.chunk","created":`...)
	p = strconv.AppendInt(p, created, 10)
	p = append(p, `,"model":`...)
	p = jsonx.AppendString(p, model)
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

func (b *StreamBody) finishStream(sum StreamSummary) {
	if b.closed {
		return
	}
	b.closed = true
	b.sa.Stream.Close()
	if b.cancel != nil {
		b.cancel()
	}
	if sum.Usage == (Usage{}) {
		sum.Usage = b.g.bill(b.sa.caps, b.sa.Served.Provider, b.upUsage, b.images)
	}
	if sum.FinishReason == "" {
		sum.FinishReason = b.finish
	}
	if b.onDone != nil {
		b.onDone(sum)
	}
}

var errClient = errors.New("client write failed")

// WriteTo relays the stream until it ends.
func (b *StreamBody) WriteTo(w io.Writer) (n int64, err error) {
	// This runs on fasthttp's connection goroutine, outside the handler's
	// recovery: a panic here must not take the process down.
	defer func() {
		if v := recover(); v != nil {
			b.g.log.Error("stream relay panic", zap.String("panic_type", fmt.Sprintf("%T", v)), zap.Stack("stack"))
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
	ev := b.sa.First
	for {
		if err := b.event(ev, write); err != nil {
			return err
		}
		var err error
		ev, err = b.sa.Stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
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
	if b.includeUsage {
		b.buf = append(b.buf[:0], "data: "...)
		b.buf = append(b.buf, b.prefix...)
		b.buf = append(b.buf, `],"usage":`...)
		b.buf = appendUsage(b.buf, b.g.bill(b.sa.caps, b.sa.Served.Provider, b.upUsage, b.images), b.upUsage.PromptImageTokens)
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
	if b.includeUsage {
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
		b.upUsage = *ev.Usage
		return nil
	case ev.Text != nil && ev.Refusal:
		return b.refusal(c, ev.Text, write)
	case ev.Text != nil:
		if b.format == FormatDataURL {
			// content will be the image's data URL; text is only sent if no
			// image comes.
			b.held[c] = append(b.held[c], ev.Text...)
			return nil
		}
		return b.text(c, ev.Text, write)
	case ev.Image != nil:
		b.images++
		return b.image(c, ev.Image, write)
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
	if err := b.role(c, write); err != nil {
		return err
	}
	b.chunkStart(c)
	first := !b.hasImage[c]
	b.hasImage[c] = true
	var suffix string
	switch {
	case b.format == FormatMarkdown:
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
	case b.format == FormatDataURL && first:
		b.buf = append(b.buf, `{"content":"`...)
		suffix = `"}`
	default:
		b.buf = append(b.buf, `{"images":[{"type":"image_url","image_url":{"url":"`...)
		suffix = `"}}]}`
	}
	if b.sa.offload && img.URL == "" {
		b.g.offloadImage(b.sa.ctx, img)
	}
	b.g.keepSignature(b.sa.ctx, img)
	if img.URL != "" {
		b.buf = appendEscaped(b.buf, img.URL)
	} else {
		b.buf = appendDataURLStart(b.buf, img.MIME)
		if err := write(b.buf); err != nil {
			return err
		}
		if err := write(img.B64); err != nil {
			return err
		}
		b.buf = b.buf[:0]
	}
	b.buf = append(b.buf, suffix...)
	b.buf = b.chunkEnd(b.buf, "")
	return write(b.buf)
}
