package provider

import (
	"fmt"
	"slices"

	"nanogate/internal/jsonx"
)

// Limits of a chat request that protect the gateway before any upstream call.
const (
	MaxMessages    = 256
	MaxImageInputs = 16
	MaxN           = 8
	// MaxModelBytes bounds the model id: it is echoed into errors and logs,
	// and real ids are a few dozen bytes.
	MaxModelBytes = 256
	// MaxOutputTokens is the output limit of Google's image models (32768
	// for 2.5 Flash Image and the 3.x image models): max_tokens above it
	// could never be honoured, and an unbounded one would make the token
	// and cost estimates meaningless.
	MaxOutputTokens = 32768
)

// ChatRequest is a chat request as every provider kind takes it: the
// client's OpenAI-shaped body (package openai parses it), with its parts
// found and checked once. Byte slices point into Raw and live as long as it
// does.
type ChatRequest struct {
	// Raw is the client's body verbatim.
	Raw      []byte
	Model    string
	Messages []Message
	Stream   bool
	// IncludeUsage is stream_options.include_usage.
	IncludeUsage bool
	N            int // 1 when absent
	// MaxTokens is max_completion_tokens or max_tokens, 0 when absent.
	MaxTokens int64
	// Temperature and TopP are raw JSON numbers, nil when absent.
	Temperature, TopP []byte
	Seed              []byte
	// Stop holds the stop sequences as JSON-escaped string contents.
	Stop [][]byte
	// AspectRatio comes from the nanogate extension image_config.aspect_ratio.
	AspectRatio string
	// ImageSize is image_config.image_size (512, 1K, 2K, 4K); "" for the
	// model's default.
	ImageSize string
	// Params lists the other top-level parameters present (OpenAI names), so a
	// provider can refuse what it cannot honour instead of dropping it.
	Params []string
	// ImageInputs counts image parts over all messages.
	ImageInputs int
	// Resolved is set when an image link was replaced by its data, or an
	// image's declared type by the one its bytes show: the client's raw
	// messages no longer say what is sent upstream.
	Resolved bool
	// ThoughtSignatures are the signatures of images the model drew in
	// earlier turns, by ImageDigest; an assistant message's image found here
	// goes back to Google with its thoughtSignature.
	ThoughtSignatures map[[32]byte][]byte
	// Forward asks ChatStream for the non-stream answer forwarded as it
	// arrives (see forward.go): events in the model's order, images in
	// windows (Event.Piece), the usage last. ForwardDigest adds each
	// image's digest to its end.
	Forward       bool
	ForwardDigest bool
	// ForwardStream asks ChatStream, for a stream, for its images in
	// windows (Event.Piece) instead of whole (Event.Image), ForwardDigest
	// adding their digests; a kind that cannot forward them ignores it.
	ForwardStream bool
	// fetched holds the images downloaded for the request (ImageFetches),
	// until ReleaseImages.
	fetched *fetchHold
}

// Message is one chat message.
type Message struct {
	Role  string
	Parts []Part
}

// Part is a text or an image of a message.
type Part struct {
	// Text is JSON-escaped string content; nil for an image part.
	Text []byte
	// Image is set for image_url parts.
	Image *ImageInput
}

// ImageInput is an image_url part.
type ImageInput struct {
	// URL is the unescaped URL (data:, http: or https:).
	URL []byte
	// For data URLs: the media type and the base64 payload (a span of URL).
	// For a fetched http(s) URL: the media type its content shows.
	MIME string
	B64  []byte
	// Data is the image an http(s) URL pointed at, once ImageFetches has
	// downloaded it for a kind that sends image bytes upstream; the URL
	// itself is what other kinds pass on.
	Data []byte
}

// RequestError is a client mistake in the request, reported as HTTP 400.
type RequestError struct {
	Param string
	Msg   string
}

// Error returns the message the client sees.
func (e *RequestError) Error() string { return e.Msg }

func badParam(param, format string, args ...any) *RequestError {
	return &RequestError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

var b64Alphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = true
	}
	return t
}()

// b64OK is the standard base64 alphabet as a 0/1 table: the check ANDs eight
// lookups at a time instead of branching on each byte.
var b64OK = func() (t [256]uint8) {
	for c, ok := range b64Alphabet {
		if ok {
			t[c] = 1
		}
	}
	return t
}()

// ValidBase64 reports whether b is non-empty padded standard base64. It checks
// the alphabet and the length without decoding, so megabytes pass in
// microseconds.
func ValidBase64(b []byte) bool {
	n := len(b)
	if n == 0 || n%4 != 0 {
		return false
	}
	if b[n-1] == '=' {
		n--
		if b[n-1] == '=' {
			n--
		}
	}
	return b64Run(b[:n])
}

// b64Run reports whether every byte of b is of the standard base64
// alphabet, padding excluded.
func b64Run(b []byte) bool {
	acc := uint8(1)
	for len(b) >= 8 {
		acc &= b64OK[b[0]] & b64OK[b[1]] & b64OK[b[2]] & b64OK[b[3]] & b64OK[b[4]] & b64OK[b[5]] & b64OK[b[6]] & b64OK[b[7]]
		b = b[8:]
	}
	for _, c := range b {
		acc &= b64OK[c]
	}
	return acc == 1
}

// Single returns a copy of r that asks for one answer (n 1, and no "n" in
// the body sent upstream): the gateway fans a request for n answers out as
// n such calls, since Google's image models take no candidateCount. The copy
// shares r's messages and fetches its image links on its own.
func (r *ChatRequest) Single() *ChatRequest {
	c := *r
	c.N = 1
	c.fetched = nil
	if i := slices.Index(c.Params, "n"); i >= 0 {
		c.Params = slices.Delete(slices.Clone(c.Params), i, i+1)
	}
	raw := make([]byte, 0, len(r.Raw))
	raw = append(raw, '{')
	first := true
	jsonx.ObjectEach(r.Raw, func(key, v []byte) error {
		if string(key) == "n" {
			return nil
		}
		if !first {
			raw = append(raw, ',')
		}
		first = false
		raw = jsonx.AppendStringBytes(raw, key)
		raw = append(raw, ':')
		raw = append(raw, v...)
		return nil
	})
	c.Raw = append(raw, '}')
	return &c
}
