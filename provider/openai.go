package provider

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/config"
	"nanogate/internal/jsonx"
	"nanogate/upstream"
)

// Options are the gateway-wide settings a provider needs.
type Options struct {
	// TokensPerImage is what the gateway bills per image; used to tell text
	// tokens from image tokens when an upstream lumps them together.
	TokensPerImage int64
	// MaxBodyBytes caps an upstream answer (non-stream body or one SSE event).
	MaxBodyBytes int
	// Images fetches the images given by http(s) URL for kinds that send
	// image bytes upstream (gemini), shared by every provider; nil: each
	// such provider makes its own around Fetcher.
	Images *ImageFetches
	// Fetcher downloads one image when Images is nil; nil selects a
	// default safefetch.Fetcher.
	Fetcher ImageFetcher
}

func (o *Options) defaults() {
	if o.TokensPerImage <= 0 {
		o.TokensPerImage = 1290
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 20
	}
}

// OpenAI is the openai kind: an OpenAI-compatible chat completions endpoint
// such as a reseller's.
type OpenAI struct {
	name   string
	key    string
	client *upstream.Client
	path   string // .../chat/completions
	opts   Options
	scrub  *scrubber
}

// NewOpenAI returns the provider described by cfg.
func NewOpenAI(cfg config.Provider, opts Options) (*OpenAI, error) {
	opts.defaults()
	c, err := upstream.New(cfg.BaseURL, upstream.Options{MaxConns: cfg.MaxConns, MaxBodyBytes: opts.MaxBodyBytes})
	if err != nil {
		return nil, err
	}
	return &OpenAI{
		name:   cfg.Name,
		key:    cfg.APIKey,
		client: c,
		path:   c.BasePath() + "/chat/completions",
		opts:   opts,
		scrub:  newScrubber(cfg.APIKey, cfg.BaseURL),
	}, nil
}

// Name implements Provider.
func (p *OpenAI) Name() string { return p.name }

// Kind implements Provider.
func (p *OpenAI) Kind() config.ProviderKind { return config.KindOpenAI }

// Close implements Provider.
func (p *OpenAI) Close() { p.client.Close() }

// Chat implements Provider.
func (p *OpenAI) Chat(ctx context.Context, req *ChatRequest, model string) (*Result, error) {
	resp, err := p.send(ctx, req, model, sendBuffered)
	if err != nil {
		return nil, err
	}
	return bufferedResult(resp, p.parseResult)
}

// ChatStream implements Provider.
func (p *OpenAI) ChatStream(ctx context.Context, req *ChatRequest, model string) (Stream, error) {
	if req.Forward {
		resp, err := p.send(ctx, req, model, sendForward)
		if err != nil {
			return nil, err
		}
		// Resellers' images never carry a signature: nothing to digest.
		if st, ok, err := readSmall(p.name, resp, p.parseResult, false); ok {
			return st, err
		}
		return p.newForward(resp, resp.BodyStream()), nil
	}
	resp, err := p.send(ctx, req, model, sendSSE)
	if err != nil {
		return nil, err
	}
	if req.ForwardStream {
		return p.newStreamForward(resp, resp.BodyStream()), nil
	}
	return &openaiStream{p: p, eventStream: eventStream{resp: resp,
		sse: getSSEReader(resp.BodyStream(), p.opts.MaxBodyBytes)}}, nil
}

// send calls the upstream and turns a non-200 answer into an *Error.
func (p *OpenAI) send(ctx context.Context, req *ChatRequest, model string, mode sendMode) (*upstream.Response, error) {
	stream := mode == sendSSE
	ureq := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(ureq)
	ureq.Header.SetMethod(fasthttp.MethodPost)
	ureq.SetRequestURI(p.path)
	ureq.Header.SetContentType("application/json")
	ureq.Header.Set("Authorization", "Bearer "+p.key)
	if stream {
		ureq.Header.Set("Accept", "text/event-stream")
	}
	ub := getUpBody()
	ub.body = appendOpenAIBodyRefs(ub.body, req, model, stream, &ub.refs)
	ub.set(ureq)

	resp, err := p.client.Do(ctx, ureq, mode != sendBuffered)
	// Do has written the whole request by the time it returns.
	ub.release(ureq)
	if err != nil {
		if err == upstream.ErrBodyTooLarge {
			return nil, &Error{Provider: p.name, Kind: KindInvalidResponse, Message: "upstream answer too large", Err: err}
		}
		return nil, transportError(p.name, err)
	}
	if resp.StatusCode() == fasthttp.StatusOK {
		return resp, nil
	}
	defer resp.Release()
	if mode != sendBuffered {
		// Read the error body of a failed stream request, capped.
		buf := make([]byte, 0, 4096)
		b := bytes.NewBuffer(buf)
		if _, err := io.Copy(b, io.LimitReader(resp.BodyStream(), 1<<20)); err != nil {
			return nil, transportError(p.name, err)
		}
		return nil, p.statusError(resp, b.Bytes())
	}
	return nil, p.statusError(resp, resp.Body())
}

// appendOpenAIBody copies the client's body with the provider's model name and
// with usage always requested for streams (the gateway bills from it; the
// client only sees it if it asked). image_config goes along: it is the field
// OpenRouter-style resellers take the aspect ratio of Gemini images from.
func appendOpenAIBody(dst []byte, req *ChatRequest, model string, stream bool) []byte {
	return appendOpenAIBodyRefs(dst, req, model, stream, nil)
}

// appendOpenAIBodyRefs is appendOpenAIBody that, when refs is not nil,
// references the client's large values (its messages with their images,
// or the images alone) instead of copying them into dst (splitBody).
func appendOpenAIBodyRefs(dst []byte, req *ChatRequest, model string, stream bool, refs *[]bodyRef) []byte {
	dst = append(dst, `{"model":`...)
	dst = jsonx.AppendString(dst, model)
	jsonx.ObjectEach(req.Raw, func(key, v []byte) error {
		switch string(key) {
		case "model", "stream_options", "stream":
			return nil
		case "messages":
			if req.Resolved {
				dst = append(dst, `,"messages":`...)
				dst = appendMessages(dst, req.Messages, refs)
				return nil
			}
		}
		dst = append(dst, ',')
		dst = jsonx.AppendStringBytes(dst, key)
		dst = append(dst, ':')
		dst = appendRef(dst, v, refs)
		return nil
	})
	if stream {
		dst = append(dst, `,"stream":true,"stream_options":{"include_usage":true}`...)
	}
	return append(dst, '}')
}

// appendMessages writes messages from their parsed form: used when image
// links were resolved to data, so the upstream gets the images themselves.
func appendMessages(dst []byte, msgs []Message, refs *[]bodyRef) []byte {
	dst = append(dst, '[')
	for i, m := range msgs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"role":`...)
		dst = jsonx.AppendString(dst, m.Role)
		dst = append(dst, `,"content":[`...)
		for j, p := range m.Parts {
			if j > 0 {
				dst = append(dst, ',')
			}
			if p.Image == nil {
				dst = append(dst, `{"type":"text","text":"`...)
				dst = append(dst, p.Text...)
				dst = append(dst, `"}`...)
				continue
			}
			dst = append(dst, `{"type":"image_url","image_url":{"url":`...)
			if p.Image.B64 != nil {
				dst = append(dst, `"data:`...)
				dst = append(dst, p.Image.MIME...)
				dst = append(dst, ";base64,"...)
				dst = appendRef(dst, p.Image.B64, refs)
				dst = append(dst, '"')
			} else {
				dst = jsonx.AppendStringBytes(dst, p.Image.URL)
			}
			dst = append(dst, `}}`...)
		}
		dst = append(dst, `]}`...)
	}
	return append(dst, ']')
}

// statusError classifies a non-200 answer.
func (p *OpenAI) statusError(resp *upstream.Response, body []byte) *Error {
	status := resp.StatusCode()
	e := &Error{Provider: p.name, Status: status}
	e.Type, e.Code, e.Param, e.Message = parseOpenAIError(body)
	e.Message = p.scrub.clean(e.Message)
	if e.Message == "" {
		e.Message = "upstream answered HTTP " + strconv.Itoa(status)
	}
	switch {
	case status == fasthttp.StatusTooManyRequests:
		e.Kind = KindRateLimited
		if e.Code == "insufficient_quota" {
			e.Kind = KindConfig
		}
		e.RetryAfter = retryAfter(&resp.Response)
	case status >= 500:
		e.Kind = KindServer
	case status == fasthttp.StatusUnauthorized, status == fasthttp.StatusForbidden,
		status == fasthttp.StatusPaymentRequired, status == fasthttp.StatusNotFound:
		// The provider refused our key, our credit or our model mapping: none
		// of that is the client's doing.
		e.Kind = KindConfig
	case status == fasthttp.StatusRequestTimeout:
		e.Kind = KindTimeout
	case status >= 400:
		e.Kind = KindClient
	default:
		e.Kind = KindInvalidResponse
	}
	return e
}

// parseOpenAIError reads OpenAI's envelope, also wrapped in an array as some
// compatibility layers send it, and one-api's variants (numeric code).
func parseOpenAIError(body []byte) (typ, code, param, msg string) {
	if jsonx.KindOf(body) == jsonx.Array {
		if first, ok := jsonx.Index(body, 0); ok {
			body = first
		}
	}
	e, ok := jsonx.Get(body, "error")
	if !ok {
		return "", "", "", ""
	}
	if jsonx.KindOf(e) == jsonx.String {
		msg, _ = jsonx.Unquote(e)
		return
	}
	get := func(k string) string {
		v, ok := jsonx.Get(e, k)
		if !ok {
			return ""
		}
		switch jsonx.KindOf(v) {
		case jsonx.String:
			s, _ := jsonx.Unquote(v)
			return s
		case jsonx.Number:
			return string(v)
		}
		return ""
	}
	return get("type"), get("code"), get("param"), get("message")
}

// retryAfter reads retry-after-ms or retry-after (seconds), bounded by
// MaxRetryAfter; negative or unreadable values are ignored.
func retryAfter(r *fasthttp.Response) time.Duration {
	if v := r.Header.Peek("retry-after-ms"); len(v) > 0 {
		if ms, err := strconv.ParseFloat(string(v), 64); err == nil {
			if d, ok := retryDelay(ms, time.Millisecond); ok {
				return d
			}
		}
	}
	if v := r.Header.Peek("retry-after"); len(v) > 0 {
		if s, err := strconv.ParseFloat(string(v), 64); err == nil {
			if d, ok := retryDelay(s, time.Second); ok {
				return d
			}
		}
	}
	return 0
}

func (p *OpenAI) invalid(msg string) *Error {
	return &Error{Provider: p.name, Kind: KindInvalidResponse, Status: fasthttp.StatusOK, Message: msg}
}

// maxAnswerImages bounds the images of one chat.completion: a model makes
// a few per answer, and reading it as it arrives (openai_forward.go) costs
// a pass over what precedes each image in its choice.
const maxAnswerImages = 32

// parseResult reads a chat.completion without decoding its base64 images.
// A data URL that begins as an image's ("data:image/...;base64,") but whose
// data is not one (bad base64, or a header checkOutputImage refuses) makes
// the answer invalid: its forwarded reading has handed the image's start
// out by the time it sees that.
func (p *OpenAI) parseResult(body []byte) (*Result, error) {
	if jsonx.KindOf(body) != jsonx.Object || !jsonx.Valid(body) {
		return nil, p.invalid("upstream answer is not JSON")
	}
	// One walk for the members read (each as Get finds it): the image in
	// the content is skipped once, not once per member.
	var m [5][]byte
	jsonx.GetMany(body, answerKeys, m[:])
	if m[0] != nil {
		return nil, p.invalid("upstream answered 200 with an error")
	}
	res := &Result{}
	if v := m[1]; v != nil && jsonx.KindOf(v) == jsonx.String {
		res.ID, _ = jsonx.Unquote(v)
	}
	if v := m[2]; v != nil {
		res.Created, _ = jsonx.Int(v)
	}
	choices := m[3]
	if choices == nil || jsonx.KindOf(choices) != jsonx.Array {
		return nil, p.invalid("upstream answer has no choices")
	}
	err := jsonx.ArrayEach(choices, func(i int, c []byte) error {
		ch, err := p.parseChoice(i, c)
		if err != nil {
			return err
		}
		res.Choices = append(res.Choices, ch)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(res.Choices) == 0 {
		return nil, p.invalid("upstream answer has no choices")
	}
	if res.Images() > maxAnswerImages {
		return nil, p.invalid("upstream answer has too many images")
	}
	if u := m[4]; u != nil && jsonx.KindOf(u) == jsonx.Object {
		res.Usage = p.parseUsage(u, res.Images())
	}
	return res, nil
}

// The members parseResult, parseChoice and a message read, in the order of
// their GetMany spans.
var (
	answerKeys  = []string{"error", "id", "created", "choices", "usage"}
	choiceKeys  = []string{"index", "message", "finish_reason"}
	messageKeys = []string{"content", "images"}
)

func (p *OpenAI) parseChoice(i int, c []byte) (Choice, error) {
	ch := Choice{Index: i}
	if jsonx.KindOf(c) != jsonx.Object {
		return ch, p.invalid("upstream choice is not an object")
	}
	var cm [3][]byte
	jsonx.GetMany(c, choiceKeys, cm[:])
	if v := cm[0]; v != nil {
		if n, err := jsonx.Int(v); err == nil && n >= 0 && n < MaxN {
			ch.Index = int(n)
		}
	}
	msg := cm[1]
	if msg == nil || jsonx.KindOf(msg) != jsonx.Object {
		return ch, p.invalid("upstream choice has no message")
	}
	if v := cm[2]; v != nil && jsonx.KindOf(v) == jsonx.String {
		ch.FinishReason, _ = jsonx.Unquote(v)
	}
	if ch.FinishReason == "" {
		ch.FinishReason = "stop"
	}
	var mm [2][]byte
	jsonx.GetMany(msg, messageKeys, mm[:])
	if content := mm[0]; content != nil {
		switch jsonx.KindOf(content) {
		case jsonx.String:
			if !splitAnswerMarkdown(&ch, content[1:len(content)-1]) {
				return ch, p.invalid(damagedImage)
			}
		case jsonx.Array:
			// Content parts: text and image_url parts in order.
			err := jsonx.ArrayEach(content, func(_ int, part []byte) error {
				if t, ok := jsonx.Get(part, "text"); ok && jsonx.KindOf(t) == jsonx.String {
					if !splitAnswerMarkdown(&ch, t[1:len(t)-1]) {
						return p.invalid(damagedImage)
					}
				}
				return p.addImagePart(&ch, part)
			})
			if pe, ok := AsError(err); ok {
				return ch, pe
			}
			if err != nil {
				return ch, p.invalid("upstream content is malformed")
			}
		case jsonx.Null:
		default:
			return ch, p.invalid("upstream content is neither text nor parts")
		}
	}
	// OpenRouter-style resellers put images beside the text.
	if imgs := mm[1]; imgs != nil && jsonx.KindOf(imgs) == jsonx.Array {
		err := jsonx.ArrayEach(imgs, func(_ int, part []byte) error {
			return p.addImagePart(&ch, part)
		})
		if pe, ok := AsError(err); ok {
			return ch, pe
		}
	}
	ch.settlePieces()
	return ch, nil
}

// damagedImage is why an answer with an image that is not one is refused.
const damagedImage = "upstream image is damaged"

// addImagePart adds the image of a content or images[] part to ch, if it
// has one; a data URL of an image that is not one is an *Error.
func (p *OpenAI) addImagePart(ch *Choice, part []byte) error {
	img, ok, err := p.checkedImagePart(part)
	if ok {
		ch.addImage(img)
	}
	return err
}

// checkedImagePart is the image of a content or images[] part, ok false
// when it has none; a data URL of an image that is not one is an *Error.
func (p *OpenAI) checkedImagePart(part []byte) (img Image, ok bool, err error) {
	img, m := readImagePart(part)
	switch m {
	case broken:
		return img, false, p.invalid(damagedImage)
	case matched:
		if img.B64 != nil {
			if _, why, _ := checkOutputImage(img.MIME, img.B64, true); why != "" {
				return img, false, p.invalid(why)
			}
		}
		return img, true, nil
	}
	return img, false, nil
}

// readImagePart reads {"type":"image_url","image_url":{"url":"data:..."}}
// (or the url as a plain string), telling a part without an image (noMatch)
// from one whose data URL is an image's but whose data is not base64
// (broken).
func readImagePart(part []byte) (Image, match) {
	iu, ok := jsonx.Get(part, "image_url")
	if !ok {
		return Image{}, noMatch
	}
	if jsonx.KindOf(iu) == jsonx.Object {
		if iu, ok = jsonx.Get(iu, "url"); !ok {
			return Image{}, noMatch
		}
	}
	if jsonx.KindOf(iu) != jsonx.String {
		return Image{}, noMatch
	}
	if img, m := dataURL(iu[1 : len(iu)-1]); m != noMatch {
		return img, m
	}
	// A hosted image (OpenRouter-style resellers that store their images).
	u, err := jsonx.Unquote(iu)
	if err != nil || len(u) > maxLinkBytes || len(u) <= len("https://") || !strings.HasPrefix(u, "https://") ||
		strings.ContainsAny(u, " \t\r\n\"") {
		return Image{}, noMatch
	}
	return Image{URL: u}, matched
}

// parseDataURL reads a JSON-escaped data:image/...;base64,... URL.
func parseDataURL(raw []byte) (Image, bool) {
	img, m := dataURL(raw)
	return img, m == matched
}

// dataURL is parseDataURL that tells what is no image's data URL (noMatch)
// from an image's whose data is not base64 (broken).
func dataURL(raw []byte) (Image, match) {
	rest, ok := bytes.CutPrefix(raw, []byte("data:"))
	if !ok {
		return Image{}, noMatch
	}
	meta, data, ok := bytes.Cut(rest, []byte(";base64,"))
	if !ok {
		return Image{}, noMatch
	}
	mime := string(bytes.ReplaceAll(meta, []byte(`\/`), []byte("/")))
	if len(mime) < 7 || mime[:6] != "image/" {
		return Image{}, noMatch
	}
	if bytes.IndexByte(data, '\\') >= 0 {
		data = bytes.ReplaceAll(data, []byte(`\/`), []byte("/"))
	}
	if !ValidBase64(data) {
		return Image{}, broken
	}
	return Image{MIME: outputMIME(mime, data), B64: data}, matched
}

func joinText(a, b []byte) []byte {
	switch {
	case len(a) == 0:
		return b
	case len(b) == 0:
		return a
	}
	out := make([]byte, 0, len(a)+len(b)+4)
	return append(append(append(out, a...), `\n\n`...), b...)
}

// parseUsage reads OpenAI usage. Resellers lump image tokens into
// completion_tokens and often leave the details at zero, so text tokens are
// completion minus the reported image tokens, or minus the gateway's rate per
// image when none are reported.
func (p *OpenAI) parseUsage(u []byte, images int) Usage {
	us := Usage{Reported: true}
	num := func(obj []byte, k string) int64 {
		v, ok := jsonx.Get(obj, k)
		if !ok {
			return 0
		}
		n, _ := jsonx.Int(v)
		return n
	}
	us.PromptTokens = num(u, "prompt_tokens")
	if d, ok := jsonx.Get(u, "prompt_tokens_details"); ok && jsonx.KindOf(d) == jsonx.Object {
		us.PromptImageTokens = num(d, "image_tokens")
	}
	completion := num(u, "completion_tokens")
	var imageTokens int64
	if d, ok := jsonx.Get(u, "completion_tokens_details"); ok && jsonx.KindOf(d) == jsonx.Object {
		imageTokens = num(d, "image_tokens")
	}
	if imageTokens == 0 {
		imageTokens = int64(images) * p.opts.TokensPerImage
	}
	us.TextTokens = max(completion-imageTokens, 0)
	return us
}

// openaiStream relays chat.completion.chunk events as neutral events.
//
// This reading holds each event whole, its images included; the forwarding
// one (openai_stream_forward.go) feeds it each event with the base64 of its
// images cut out, so that what it decides (text splits, held text, finish
// reasons, usage) is decided once. An image whose markup or data URL began
// as an image's but whose data is not one (bad base64, a header
// checkOutputImage refuses, markup never closed) fails the stream, as it
// fails a chat.completion: the forwarded reading has handed its start on
// by the time it sees that.
type openaiStream struct {
	eventStream
	p        *OpenAI
	pending  [MaxN][]byte // held-back text that may be the start of an image
	spare    [MaxN][]byte
	finished bool // a finish_reason was seen
	done     bool
	images   int
	segs     []segment
}

// Next implements Stream.
func (s *openaiStream) Next() (*Event, error) {
	for {
		if ev := s.pop(); ev != nil {
			return ev, nil
		}
		if s.done {
			return nil, io.EOF
		}
		data, err := s.sse.Next()
		if err == io.EOF {
			if !s.finished {
				return nil, s.endedEarly()
			}
			if err := s.flush(); err != nil {
				return nil, err
			}
			s.done = true
			continue
		}
		if err != nil {
			if err == ErrEventTooLarge {
				return nil, s.p.invalid("upstream stream event too large")
			}
			return nil, transportError(s.p.name, err)
		}
		if bytes.Equal(data, []byte("[DONE]")) {
			if err := s.flush(); err != nil {
				return nil, err
			}
			s.done = true
			continue
		}
		if err := s.chunk(data); err != nil {
			return nil, err
		}
	}
}

// endedEarly is the failure of a stream whose body ended before a finish
// reason.
func (s *openaiStream) endedEarly() error {
	return &Error{Provider: s.p.name, Kind: KindTransport, Message: "upstream stream ended early"}
}

// flush emits held-back text at the end of the stream.
func (s *openaiStream) flush() error {
	for c := range s.pending {
		if len(s.pending[c]) > 0 {
			if _, err := s.emitSegments(c, s.pending[c], true); err != nil {
				return err
			}
			s.pending[c] = s.pending[c][:0]
		}
	}
	return nil
}

func (s *openaiStream) chunk(data []byte) error {
	if jsonx.KindOf(data) != jsonx.Object || !jsonx.Valid(data) {
		return s.p.invalid("upstream stream event is not JSON")
	}
	if e, ok := jsonx.Get(data, "error"); ok && jsonx.KindOf(e) != jsonx.Null {
		typ, code, param, msg := parseOpenAIError(data)
		return &Error{Provider: s.p.name, Kind: KindServer, Status: fasthttp.StatusOK, Type: typ, Code: code, Param: param, Message: s.p.scrub.clean(msg)}
	}
	if choices, ok := jsonx.Get(data, "choices"); ok && jsonx.KindOf(choices) == jsonx.Array {
		err := jsonx.ArrayEach(choices, func(i int, c []byte) error {
			return s.choice(i, c)
		})
		if err != nil {
			return err
		}
	}
	if u, ok := jsonx.Get(data, "usage"); ok && jsonx.KindOf(u) == jsonx.Object {
		us := s.p.parseUsage(u, s.images)
		s.queue = append(s.queue, Event{Usage: &us})
	}
	return nil
}

func (s *openaiStream) choice(i int, c []byte) error {
	idx := i
	if v, ok := jsonx.Get(c, "index"); ok {
		n, err := jsonx.Int(v)
		if err != nil || n < 0 || n >= MaxN {
			return s.p.invalid("upstream stream choice index out of range")
		}
		idx = int(n)
	} else if idx >= MaxN {
		// Numbered by position, a choice past MaxN is out of range too.
		return s.p.invalid("upstream stream choice index out of range")
	}
	if d, ok := jsonx.Get(c, "delta"); ok && jsonx.KindOf(d) == jsonx.Object {
		if content, ok := jsonx.Get(d, "content"); ok && jsonx.KindOf(content) == jsonx.String {
			if err := s.text(idx, content[1:len(content)-1]); err != nil {
				return err
			}
		}
		if imgs, ok := jsonx.Get(d, "images"); ok && jsonx.KindOf(imgs) == jsonx.Array {
			err := jsonx.ArrayEach(imgs, func(_ int, part []byte) error {
				img, ok, err := s.p.checkedImagePart(part)
				if ok {
					s.images++
					s.queue = append(s.queue, Event{Choice: idx, Image: &img})
				}
				return err
			})
			if pe, ok := AsError(err); ok {
				return pe
			}
		}
	}
	if v, ok := jsonx.Get(c, "finish_reason"); ok && jsonx.KindOf(v) == jsonx.String {
		// Text held back for a possible image is released before the end.
		if len(s.pending[idx]) > 0 {
			if _, err := s.emitSegments(idx, s.pending[idx], true); err != nil {
				return err
			}
			s.pending[idx] = s.pending[idx][:0]
		}
		fr, _ := jsonx.Unquote(v)
		s.finished = true
		s.queue = append(s.queue, Event{Choice: idx, FinishReason: fr})
	}
	return nil
}

// text handles a content delta: markdown images in it become image events,
// and a possible image cut across deltas is held back until it completes.
func (s *openaiStream) text(c int, raw []byte) error {
	if len(raw) == 0 {
		return nil
	}
	buf := raw
	if len(s.pending[c]) > 0 {
		s.pending[c] = append(s.pending[c], raw...)
		if bytes.IndexByte(raw, ')') < 0 && len(s.pending[c]) < s.p.opts.MaxBodyBytes {
			return nil // an image can only complete at ')'
		}
		buf = s.pending[c]
	}
	consumed, err := s.emitSegments(c, buf, len(buf) >= s.p.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	rest := buf[consumed:]
	// Queued events may point into the pending buffer: keep the rest in the
	// spare one and swap.
	s.spare[c] = append(s.spare[c][:0], rest...)
	s.pending[c], s.spare[c] = s.spare[c], s.pending[c]
	return nil
}

func (s *openaiStream) emitSegments(c int, buf []byte, final bool) (int, error) {
	segs, consumed, ok := scanMarkdownCheck(buf, final, true, true, s.segs[:0])
	s.segs = segs
	if !ok {
		return consumed, s.p.invalid(damagedImage)
	}
	for _, sg := range segs {
		if sg.image != nil {
			s.images++
			s.queue = append(s.queue, Event{Choice: c, Image: sg.image})
		} else if len(sg.text) > 0 {
			s.queue = append(s.queue, Event{Choice: c, Text: sg.text})
		}
	}
	return consumed, nil
}
