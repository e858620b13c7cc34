// Package provider speaks to upstream image models. Each kind (openai.go,
// gemini.go) translates a parsed chat request (ChatRequest, which package
// openai parses from the client's OpenAI body) into its wire format and
// its answer into one provider-neutral Result or Stream, so the rest of the
// gateway never sees an upstream format.
//
// Text in results is kept as JSON-escaped string content (what sits between
// the quotes of a JSON string): both upstream formats deliver text that way and
// the gateway writes it back into JSON, so it is passed through without being
// unescaped and re-escaped. Images are base64 spans that point into the
// upstream body; they are valid until the Result or Stream is released.
//
// A non-stream answer can also be forwarded as it arrives instead of read
// whole (ChatRequest.Forward, forward.go): ChatStream then hands out the
// answer as events in the model's order, each image as a begin, windows of
// checked base64 and an end (Event.Piece), so that an answer in flight holds
// a window rather than its image. The first Next reads ahead far enough for
// the router to fail over on what breaks early (gemini_forward.go says how
// far); after it, a failure ends the answer with an error. Both kinds read
// their answer through a 256 KiB window (forward.go's walker, with
// gemini_forward.go and openai_forward.go for what each kind's answer
// holds).
package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"nanogate/config"
	"nanogate/internal/safemath"
)

// ErrUnknownKind: the provider's kind is not one this build speaks.
var ErrUnknownKind = errors.New("unknown provider kind")

// New makes the provider of c's kind.
func New(c config.Provider, o Options) (Provider, error) {
	switch c.Kind {
	case config.KindOpenAI:
		p, err := NewOpenAI(c, o)
		if err != nil {
			return nil, err
		}
		return p, nil
	case config.KindGemini:
		p, err := NewGemini(c, o)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKind, c.Kind)
}

// Provider is one configured upstream.
type Provider interface {
	// Name is the configured provider name.
	Name() string
	// Kind is the wire format the provider speaks.
	Kind() config.ProviderKind
	// Chat sends a non-stream chat request for the provider's model name.
	Chat(ctx context.Context, req *ChatRequest, model string) (*Result, error)
	// ChatStream opens a stream. Errors before the first event come from here.
	ChatStream(ctx context.Context, req *ChatRequest, model string) (Stream, error)
	// Close releases idle connections.
	Close()
}

// Result is a complete answer.
type Result struct {
	ID      string
	Created int64
	Choices []Choice
	Usage   Usage
	release func()
}

// Release frees the upstream buffers the result points into. Safe to call twice.
func (r *Result) Release() {
	if r != nil && r.release != nil {
		r.release()
		r.release = nil
	}
}

// Images counts the images over all choices.
func (r *Result) Images() int {
	n := 0
	for i := range r.Choices {
		n += len(r.Choices[i].Images)
	}
	return n
}

// Choice is one candidate answer.
type Choice struct {
	Index int
	// Text is JSON-escaped string content, without the images.
	Text []byte
	// Images in the order the model produced them.
	Images []Image
	// Pieces is the content in the order the model produced it, text and
	// images interleaved (text, image, text, image), for answers that show
	// them in one stream of content. Nil when the choice has no image: Text
	// is then the whole content.
	Pieces []Piece
	// FinishReason uses OpenAI's words: stop, length, content_filter.
	FinishReason string
}

// Piece is a run of text or one image of a choice's content.
type Piece struct {
	// Text is JSON-escaped string content; nil for an image.
	Text []byte
	// Image is the index of the image in the choice's Images when Text is
	// nil.
	Image int
}

// addImage appends img to the choice's images and to its pieces.
func (c *Choice) addImage(img Image) {
	c.Images = append(c.Images, img)
	c.Pieces = append(c.Pieces, Piece{Image: len(c.Images) - 1})
}

// addText appends a run of text to the choice's pieces (not to Text, which
// each kind joins in its own way).
func (c *Choice) addText(t []byte) {
	if len(t) > 0 {
		c.Pieces = append(c.Pieces, Piece{Text: t})
	}
}

// settlePieces drops the pieces of a choice without images: its Text says
// it all.
func (c *Choice) settlePieces() {
	if len(c.Images) == 0 {
		c.Pieces = nil
	}
}

// Image is one generated image.
type Image struct {
	MIME string
	// B64 is the standard base64 encoding of the image bytes.
	B64 []byte
	// URL, when set, is a link to the stored image that answers carry
	// instead of the data (images.offload).
	URL string
	// Signature is the thoughtSignature Google put on the image's part
	// (base64), nil when none: the model's context, to send back with the
	// image on the next turn. Never shown to clients, never logged.
	Signature []byte
}

// Usage is what the upstream reported, split so that the gateway can bill
// images at its own rate.
type Usage struct {
	// Reported is false when the upstream sent no usage at all.
	Reported     bool
	PromptTokens int64
	// TextTokens are completion tokens that are not image tokens.
	TextTokens int64
	// PromptImageTokens are the prompt tokens of input images, as the
	// upstream reported them (0 when it did not): part of PromptTokens.
	PromptImageTokens int64
	// ImageTokens are the output tokens of the generated images as the
	// upstream counted them (Gemini's candidatesTokensDetails IMAGE), when
	// ImageTokensListed.
	ImageTokens       int64
	ImageTokensListed bool
}

// Stream yields events until io.EOF. Close it exactly once.
type Stream interface {
	// Next returns the next event. Spans in the event are valid until the
	// following call to Next or Close.
	Next() (*Event, error)
	Close()
}

// Event is one piece of a streamed answer. Exactly one of Text, Image,
// Piece, FinishReason or Usage is set.
type Event struct {
	Choice int
	Text   []byte // JSON-escaped string content
	// Refusal marks Text as the reason the model refused (a safety block):
	// OpenAI's refusal field, not content.
	Refusal bool
	Image   *Image
	// Piece is a step of an image forwarded in windows: only in the
	// answers of requests with Forward or ForwardStream set, whose images
	// come as pieces.
	Piece        *ImagePiece
	FinishReason string
	Usage        *Usage
}

// ErrorKind classifies an upstream failure for the router.
type ErrorKind int

// Error kinds.
const (
	// KindTransport: connect, write or read failed, or the connection dropped.
	KindTransport ErrorKind = iota + 1
	// KindTimeout: the provider's timeout passed.
	KindTimeout
	// KindServer: HTTP 5xx.
	KindServer
	// KindRateLimited: HTTP 429 or a quota answer.
	KindRateLimited
	// KindInvalidResponse: a 200 whose body is not a valid answer.
	KindInvalidResponse
	// KindConfig: the upstream refused the gateway's own credentials or
	// account (bad key, no credit): the provider is unusable, not the request.
	KindConfig
	// KindClient: the upstream refused the request itself (4xx other than
	// 429): the client's fault, returned as is and never retried.
	KindClient
	// KindCanceled: the caller went away.
	KindCanceled
)

// Error is an upstream failure. Message is safe to show a client: it never
// holds a provider key or an upstream URL.
type Error struct {
	Provider string
	Kind     ErrorKind
	// Status is the upstream HTTP status, 0 when none was received.
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter is how long the upstream asked to wait (429), 0 if unknown;
	// never more than MaxRetryAfter.
	RetryAfter time.Duration
	Err        error
}

// Error names the provider and what failed, scrubbed of keys and hosts.
func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: upstream status %d: %s", e.Provider, e.Status, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Provider, e.Message)
}

// Unwrap returns the transport or parse error behind the failure.
func (e *Error) Unwrap() error { return e.Err }

// Failover reports whether another provider may succeed where this one failed.
func (e *Error) Failover() bool {
	return e.Kind != KindClient && e.Kind != KindCanceled
}

// NothingMade reports whether the failure came before the upstream could
// have generated (and billed) an image: a 429, an error status, or a
// connection that was never made. A client may then safely retry; after a
// timeout or an answer cut short, an image may exist and a retry buys
// another.
func (e *Error) NothingMade() bool {
	switch e.Kind {
	case KindRateLimited, KindServer:
		return e.Status != 0
	case KindConfig:
		return e.Status == 429 // a quota that says no delay: still nothing made
	case KindTransport:
		var op *net.OpError
		return errors.As(e.Err, &op) && op.Op == "dial"
	}
	return false
}

// MaxRetryAfter bounds the retry delay read from an upstream answer. It
// only keeps absurd values (retry-after: 999999999, which overflows a
// Duration in nanoseconds) from turning into garbage; how long a delay may
// bench a provider is the router's policy (routing.health.max_retry_after).
const MaxRetryAfter = 24 * time.Hour

// retryDelay turns an upstream's delay, v units long, into a Duration
// within [0, MaxRetryAfter]. ok is false for what is no delay: negative,
// zero, NaN.
func retryDelay(v float64, unit time.Duration) (d time.Duration, ok bool) {
	if !(v > 0) { // also NaN
		return 0, false
	}
	// Compared before converting: a float64 beyond int64's range does not
	// convert to a Duration.
	if v >= float64(MaxRetryAfter)/float64(unit) {
		return MaxRetryAfter, true
	}
	return time.Duration(v * float64(unit)), true
}

// AsError returns err as an *Error if it is one.
func AsError(err error) (*Error, bool) {
	if err == nil {
		return nil, false // errors.As would still allocate its target
	}
	var pe *Error
	ok := errors.As(err, &pe)
	return pe, ok
}

// transportError classifies a failure to talk to the upstream at all.
func transportError(name string, err error) *Error {
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Provider: name, Kind: KindCanceled, Message: "request canceled", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Provider: name, Kind: KindTimeout, Message: "upstream timed out", Err: err}
	}
	return &Error{Provider: name, Kind: KindTransport, Message: "upstream connection failed", Err: err}
}

// Combine joins the results of calls a request was fanned out to into one,
// their choices numbered in order and their usage summed; releasing it
// releases them all.
func Combine(rs []*Result) *Result {
	if len(rs) == 1 {
		return rs[0]
	}
	out := &Result{}
	for _, r := range rs {
		if out.ID == "" {
			out.ID, out.Created = r.ID, r.Created
		}
		for _, c := range r.Choices {
			c.Index = len(out.Choices)
			out.Choices = append(out.Choices, c)
		}
		out.Usage.Reported = out.Usage.Reported || r.Usage.Reported
		out.Usage.PromptTokens = safemath.Add(out.Usage.PromptTokens, r.Usage.PromptTokens)
		out.Usage.TextTokens = safemath.Add(out.Usage.TextTokens, r.Usage.TextTokens)
		out.Usage.PromptImageTokens = safemath.Add(out.Usage.PromptImageTokens, r.Usage.PromptImageTokens)
		out.Usage.ImageTokens = safemath.Add(out.Usage.ImageTokens, r.Usage.ImageTokens)
		out.Usage.ImageTokensListed = out.Usage.ImageTokensListed || r.Usage.ImageTokensListed
	}
	out.release = func() {
		for _, r := range rs {
			r.Release()
		}
	}
	return out
}
