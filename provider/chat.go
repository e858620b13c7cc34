package provider

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

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

// ChatRequest is an OpenAI chat completions request, parsed once. Byte slices
// point into Raw and live as long as it does.
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

func (e *RequestError) Error() string { return e.Msg }

func badParam(param, format string, args ...any) *RequestError {
	return &RequestError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// knownParams are OpenAI chat parameters the gateway recognises. Any other key
// is refused the way OpenAI refuses it, so a typo never silently changes the
// result.
var knownParams = map[string]bool{
	"frequency_penalty": true, "presence_penalty": true, "logit_bias": true, "logprobs": true,
	"top_logprobs": true, "response_format": true, "tools": true, "tool_choice": true,
	"parallel_tool_calls": true, "modalities": true, "metadata": true, "store": true,
	"reasoning_effort": true, "service_tier": true, "prediction": true, "audio": true,
	"web_search_options": true, "user": true, "safety_identifier": true,
	"prompt_cache_key": true, "verbosity": true, "functions": true, "function_call": true,
}

// ParseChatRequest parses and validates body. The returned request aliases body.
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	i := jsonx.SkipWS(body, 0)
	if i >= len(body) || body[i] != '{' || !jsonx.Valid(body) {
		return nil, &RequestError{Msg: "We could not parse the JSON body of your request: it must be one JSON object."}
	}
	if !utf8.Valid(body) {
		return nil, &RequestError{Msg: "The request body is not valid UTF-8."}
	}
	r := &ChatRequest{Raw: body, N: 1}
	seen := make(map[string]bool, 8)
	var haveMessages bool
	err := jsonx.ObjectEach(body, func(key, v []byte) error {
		k := string(key)
		if seen[k] {
			return badParam(k, "Duplicate key %q in the request body.", k)
		}
		seen[k] = true
		switch k {
		case "model":
			s, err := str(v, "model")
			if err != nil {
				return err
			}
			if len(s) > MaxModelBytes {
				return badParam("model", "'model' must be at most %d bytes.", MaxModelBytes)
			}
			r.Model = s
		case "messages":
			haveMessages = true
			return r.parseMessages(v)
		case "stream":
			b, err := jsonx.Bool(v)
			if err != nil && jsonx.KindOf(v) != jsonx.Null {
				return badParam("stream", "'stream' must be a boolean.")
			}
			r.Stream = b
		case "stream_options":
			return r.parseStreamOptions(v)
		case "n":
			if jsonx.KindOf(v) == jsonx.Null {
				return nil
			}
			n, err := jsonx.Int(v)
			if err != nil || n < 1 || n > MaxN {
				return badParam("n", "'n' must be an integer from 1 to %d.", MaxN)
			}
			r.N = int(n)
		case "max_tokens", "max_completion_tokens":
			if jsonx.KindOf(v) == jsonx.Null {
				return nil
			}
			n, err := jsonx.Int(v)
			if err != nil || n < 1 || n > MaxOutputTokens {
				return badParam(k, "'%s' must be an integer from 1 to %d (the model's output limit).", k, MaxOutputTokens)
			}
			r.MaxTokens = n
		case "temperature", "top_p":
			if jsonx.KindOf(v) == jsonx.Null {
				return nil
			}
			f, err := jsonx.Float(v)
			if err != nil || f < 0 || f > 2 || (k == "top_p" && f > 1) {
				return badParam(k, "'%s' must be a number in range.", k)
			}
			if k == "temperature" {
				r.Temperature = v
			} else {
				r.TopP = v
			}
		case "seed":
			if jsonx.KindOf(v) == jsonx.Null {
				return nil
			}
			if _, err := jsonx.Int(v); err != nil {
				return badParam("seed", "'seed' must be an integer.")
			}
			r.Seed = v
		case "stop":
			return r.parseStop(v)
		case "image_config":
			return r.parseImageConfig(v)
		default:
			if !knownParams[k] {
				return badParam(k, "Unrecognized request argument supplied: %s", k)
			}
			if jsonx.KindOf(v) != jsonx.Null {
				r.Params = append(r.Params, k)
			}
		}
		return nil
	})
	if err != nil {
		if re, ok := err.(*RequestError); ok {
			return nil, re
		}
		return nil, &RequestError{Msg: "We could not parse the JSON body of your request."}
	}
	if r.Model == "" {
		return nil, badParam("model", "you must provide a model parameter")
	}
	if !haveMessages || len(r.Messages) == 0 {
		return nil, badParam("messages", "'messages' must be a non-empty array.")
	}
	return r, nil
}

func str(v []byte, param string) (string, error) {
	if jsonx.KindOf(v) != jsonx.String {
		return "", badParam(param, "'%s' must be a string.", param)
	}
	s, err := jsonx.Unquote(v)
	if err != nil {
		return "", badParam(param, "'%s' is not a valid string.", param)
	}
	return s, nil
}

func (r *ChatRequest) parseStreamOptions(v []byte) error {
	switch jsonx.KindOf(v) {
	case jsonx.Null:
		return nil
	case jsonx.Object:
	default:
		return badParam("stream_options", "'stream_options' must be an object.")
	}
	return jsonx.ObjectEach(v, func(key, val []byte) error {
		if string(key) != "include_usage" {
			return nil // include_obfuscation and future options do not change the result
		}
		b, err := jsonx.Bool(val)
		if err != nil {
			return badParam("stream_options.include_usage", "'stream_options.include_usage' must be a boolean.")
		}
		r.IncludeUsage = b
		return nil
	})
}

func (r *ChatRequest) parseStop(v []byte) error {
	switch jsonx.KindOf(v) {
	case jsonx.Null:
		return nil
	case jsonx.String:
		r.Stop = append(r.Stop, v[1:len(v)-1])
		return nil
	case jsonx.Array:
	default:
		return badParam("stop", "'stop' must be a string or an array of strings.")
	}
	return jsonx.ArrayEach(v, func(i int, s []byte) error {
		if jsonx.KindOf(s) != jsonx.String || i >= 4 {
			return badParam("stop", "'stop' must be a string or an array of up to 4 strings.")
		}
		r.Stop = append(r.Stop, s[1:len(s)-1])
		return nil
	})
}

// aspectRE and sizeRE are the shapes of image_config's values. Which ones a
// model takes is the catalogue's to say (checked at admission); a model it
// does not know gets what the client sent.
var (
	aspectRE = regexp.MustCompile(`^[1-9][0-9]?:[1-9][0-9]?$`)
	sizeRE   = regexp.MustCompile(`^(?:512|[1-9]K)$`)
)

func (r *ChatRequest) parseImageConfig(v []byte) error {
	if jsonx.KindOf(v) == jsonx.Null {
		return nil
	}
	if jsonx.KindOf(v) != jsonx.Object {
		return badParam("image_config", "'image_config' must be an object.")
	}
	return jsonx.ObjectEach(v, func(key, val []byte) error {
		switch string(key) {
		case "aspect_ratio", "aspectRatio":
			s, err := str(val, "image_config.aspect_ratio")
			if err != nil {
				return err
			}
			if !aspectRE.MatchString(s) {
				return badParam("image_config.aspect_ratio", "'image_config.aspect_ratio' must be a ratio such as 1:1, 16:9 or 9:16.")
			}
			r.AspectRatio = s
			return nil
		case "image_size", "imageSize":
			s, err := str(val, "image_config.image_size")
			if err != nil {
				return err
			}
			s = strings.ToUpper(s) // Google spells 1K; "1k" means the same
			if !sizeRE.MatchString(s) {
				return badParam("image_config.image_size", "'image_config.image_size' must be 512, 1K, 2K or 4K.")
			}
			r.ImageSize = s
			return nil
		}
		return badParam("image_config."+string(key), "Unrecognized argument in image_config: %s", key)
	})
}

func (r *ChatRequest) parseMessages(v []byte) error {
	if jsonx.KindOf(v) != jsonx.Array {
		return badParam("messages", "'messages' must be an array.")
	}
	return jsonx.ArrayEach(v, func(i int, m []byte) error {
		if i >= MaxMessages {
			return badParam("messages", "too many messages (at most %d).", MaxMessages)
		}
		msg, err := r.parseMessage(i, m)
		if err != nil {
			return err
		}
		r.Messages = append(r.Messages, msg)
		return nil
	})
}

var roles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true}

func (r *ChatRequest) parseMessage(i int, m []byte) (Message, error) {
	p := "messages[" + strconv.Itoa(i) + "]"
	var msg Message
	if jsonx.KindOf(m) != jsonx.Object {
		return msg, badParam(p, "'%s' must be an object.", p)
	}
	var content, images []byte
	hasContent := false
	err := jsonx.ObjectEach(m, func(key, v []byte) error {
		switch string(key) {
		case "role":
			s, err := str(v, p+".role")
			if err != nil {
				return err
			}
			if !roles[s] {
				return badParam(p+".role", "Invalid value for '%s.role': %q. Supported roles: system, developer, user, assistant.", p, s)
			}
			msg.Role = s
		case "content":
			content, hasContent = v, true
		case "images":
			// The gateway's own "images" answer format: a client that sends
			// the assistant message back as it got it must be understood.
			images = v
		case "name", "refusal", "annotations", "audio":
		case "tool_calls", "tool_call_id", "function_call":
			return badParam(p+"."+string(key), "'%s.%s' is not supported: the image model has no tools.", p, key)
		default:
			return badParam(p+"."+string(key), "Unrecognized argument in %s: %s", p, key)
		}
		return nil
	})
	if err != nil {
		return msg, err
	}
	if msg.Role == "" {
		return msg, badParam(p+".role", "'%s.role' is required.", p)
	}
	if err := r.parseContent(p, content, hasContent, &msg); err != nil {
		return msg, err
	}
	// Images beside the content come after it, as the images format puts them.
	if err := r.parseMessageImages(p, images, &msg); err != nil {
		return msg, err
	}
	if len(msg.Parts) == 0 && msg.Role != "assistant" {
		if !hasContent || jsonx.KindOf(content) == jsonx.Null {
			return msg, badParam(p+".content", "'%s.content' is required.", p)
		}
		return msg, badParam(p+".content", "'%s.content' must not be empty.", p)
	}
	return msg, nil
}

// parseContent reads a message's content: a string or an array of parts.
func (r *ChatRequest) parseContent(p string, content []byte, has bool, msg *Message) error {
	switch jsonx.KindOf(content) {
	case jsonx.Invalid, jsonx.Null:
		if has && jsonx.KindOf(content) == jsonx.Invalid {
			return badParam(p+".content", "'%s.content' must be a string or an array of content parts.", p)
		}
		return nil
	case jsonx.String:
		text := content[1 : len(content)-1]
		if msg.Role == "assistant" && bytes.HasPrefix(text, []byte("data:image/")) {
			// The data_url answer format sent back: the content is an image.
			if img, relabel, err := parseImageURL(p+".content", content); err == nil {
				r.ImageInputs++
				r.Resolved = r.Resolved || relabel
				msg.Parts = append(msg.Parts, Part{Image: img})
				return nil
			}
		}
		msg.Parts = append(msg.Parts, Part{Text: text})
		return nil
	case jsonx.Array:
	default:
		return badParam(p+".content", "'%s.content' must be a string or an array of content parts.", p)
	}
	return jsonx.ArrayEach(content, func(j int, part []byte) error {
		pt, err := r.parsePart(p+".content["+strconv.Itoa(j)+"]", part)
		if err != nil {
			return err
		}
		msg.Parts = append(msg.Parts, pt)
		return nil
	})
}

// parseMessageImages reads a message's "images" list (image_url parts), as the
// gateway's images format answers carry them.
func (r *ChatRequest) parseMessageImages(p string, v []byte, msg *Message) error {
	if v == nil || jsonx.KindOf(v) == jsonx.Null {
		return nil
	}
	if jsonx.KindOf(v) != jsonx.Array {
		return badParam(p+".images", "'%s.images' must be an array of image_url parts.", p)
	}
	return jsonx.ArrayEach(v, func(j int, part []byte) error {
		pt, err := r.parsePart(p+".images["+strconv.Itoa(j)+"]", part)
		if err != nil {
			return err
		}
		if pt.Image == nil {
			return badParam(p+".images["+strconv.Itoa(j)+"]", "'%s.images' must hold image_url parts.", p)
		}
		msg.Parts = append(msg.Parts, pt)
		return nil
	})
}

func (r *ChatRequest) parsePart(p string, part []byte) (Part, error) {
	if jsonx.KindOf(part) != jsonx.Object {
		return Part{}, badParam(p, "'%s' must be an object.", p)
	}
	typ, ok := jsonx.Get(part, "type")
	if !ok || jsonx.KindOf(typ) != jsonx.String {
		return Part{}, badParam(p+".type", "'%s.type' is required.", p)
	}
	switch string(typ[1 : len(typ)-1]) {
	case "text":
		t, ok := jsonx.Get(part, "text")
		if !ok || jsonx.KindOf(t) != jsonx.String {
			return Part{}, badParam(p+".text", "'%s.text' must be a string.", p)
		}
		return Part{Text: t[1 : len(t)-1]}, nil
	case "image_url":
		iu, ok := jsonx.Get(part, "image_url")
		if !ok {
			return Part{}, badParam(p+".image_url", "'%s.image_url' is required.", p)
		}
		var u []byte
		switch jsonx.KindOf(iu) {
		case jsonx.String:
			u = iu
		case jsonx.Object:
			if u, ok = jsonx.Get(iu, "url"); !ok || jsonx.KindOf(u) != jsonx.String {
				return Part{}, badParam(p+".image_url.url", "'%s.image_url.url' must be a string.", p)
			}
		default:
			return Part{}, badParam(p+".image_url", "'%s.image_url' must be an object with a url.", p)
		}
		r.ImageInputs++
		if r.ImageInputs > MaxImageInputs {
			return Part{}, badParam(p, "too many images in the request (at most %d).", MaxImageInputs)
		}
		img, relabel, err := parseImageURL(p+".image_url.url", u)
		if err != nil {
			return Part{}, err
		}
		r.Resolved = r.Resolved || relabel
		return Part{Image: img}, nil
	}
	return Part{}, badParam(p+".type", "Invalid value for '%s.type': supported types are text and image_url.", p)
}

// imageLabels are the media types a data URL may declare: the ones Google
// takes, image/jpg (a common misspelling of image/jpeg), and image/gif, a
// label some clients put on whatever they send. The bytes decide what is
// sent (checkImageHead); a label outside this list is refused.
var imageLabels = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/jpg": true, "image/webp": true,
	"image/heic": true, "image/heif": true, "image/gif": true,
}

// parseImageURL reads an image_url. The relabel result reports that a data
// URL's declared type was replaced by the one its bytes show: the raw body
// then no longer says what goes upstream.
func parseImageURL(param string, s []byte) (img *ImageInput, relabel bool, err error) {
	u, uerr := jsonx.StringBytes(nil, s)
	if uerr != nil {
		return nil, false, badParam(param, "'%s' is not a valid string.", param)
	}
	switch {
	case bytes.HasPrefix(u, []byte("data:")):
		rest := u[len("data:"):]
		comma := bytes.IndexByte(rest, ',')
		if comma < 0 {
			return nil, false, badParam(param, "'%s' is not a valid data URL.", param)
		}
		meta, payload := rest[:comma], rest[comma+1:]
		mime, ok := bytes.CutSuffix(meta, []byte(";base64"))
		if !ok {
			return nil, false, badParam(param, "'%s' must be a base64 data URL.", param)
		}
		label := string(bytes.ToLower(mime))
		if !imageLabels[label] {
			return nil, false, badParam(param, "'%s' has media type %q; supported: image/png, image/jpeg, image/webp, image/heic, image/heif.", param, label)
		}
		if !ValidBase64(payload) {
			return nil, false, badParam(param, "'%s' does not hold valid base64 image data.", param)
		}
		m, why := checkImageB64(label, payload)
		if why != "" {
			return nil, false, badParam(param, "'%s' is not a usable image: %s.", param, why)
		}
		return &ImageInput{URL: u, MIME: m, B64: payload}, m != string(mime), nil
	case bytes.HasPrefix(u, []byte("https://")), bytes.HasPrefix(u, []byte("http://")):
		return &ImageInput{URL: u}, false, nil
	}
	return nil, false, badParam(param, "'%s' must be a data: URL or an http(s) URL.", param)
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
	b = b[:n]
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
