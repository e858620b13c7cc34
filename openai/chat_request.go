package openai

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// parser fills a provider.ChatRequest from the client's JSON.
type parser struct{ *provider.ChatRequest }

func badParam(param, format string, args ...any) *provider.RequestError {
	return &provider.RequestError{Param: param, Msg: fmt.Sprintf(format, args...)}
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
func ParseChatRequest(body []byte) (*provider.ChatRequest, error) {
	i := jsonx.SkipWS(body, 0)
	if i >= len(body) || body[i] != '{' || !jsonx.Valid(body) {
		return nil, &provider.RequestError{Msg: "We could not parse the JSON body of your request: it must be one JSON object."}
	}
	if !utf8.Valid(body) {
		return nil, &provider.RequestError{Msg: "The request body is not valid UTF-8."}
	}
	r := parser{&provider.ChatRequest{Raw: body, N: 1}}
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
			if len(s) > provider.MaxModelBytes {
				return badParam("model", "'model' must be at most %d bytes.", provider.MaxModelBytes)
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
			if err != nil || n < 1 || n > provider.MaxN {
				return badParam("n", "'n' must be an integer from 1 to %d.", provider.MaxN)
			}
			r.N = int(n)
		case "max_tokens", "max_completion_tokens":
			if jsonx.KindOf(v) == jsonx.Null {
				return nil
			}
			n, err := jsonx.Int(v)
			if err != nil || n < 1 || n > provider.MaxOutputTokens {
				return badParam(k, "'%s' must be an integer from 1 to %d (the model's output limit).", k, provider.MaxOutputTokens)
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
		if re, ok := err.(*provider.RequestError); ok {
			return nil, re
		}
		return nil, &provider.RequestError{Msg: "We could not parse the JSON body of your request."}
	}
	if r.Model == "" {
		return nil, badParam("model", "you must provide a model parameter")
	}
	if !haveMessages || len(r.Messages) == 0 {
		return nil, badParam("messages", "'messages' must be a non-empty array.")
	}
	return r.ChatRequest, nil
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

func (r parser) parseStreamOptions(v []byte) error {
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

func (r parser) parseStop(v []byte) error {
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

func (r parser) parseImageConfig(v []byte) error {
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

func (r parser) parseMessages(v []byte) error {
	if jsonx.KindOf(v) != jsonx.Array {
		return badParam("messages", "'messages' must be an array.")
	}
	return jsonx.ArrayEach(v, func(i int, m []byte) error {
		if i >= provider.MaxMessages {
			return badParam("messages", "too many messages (at most %d).", provider.MaxMessages)
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

func (r parser) parseMessage(i int, m []byte) (provider.Message, error) {
	p := "messages[" + strconv.Itoa(i) + "]"
	var msg provider.Message
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
func (r parser) parseContent(p string, content []byte, has bool, msg *provider.Message) error {
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
				msg.Parts = append(msg.Parts, provider.Part{Image: img})
				return nil
			}
		}
		msg.Parts = append(msg.Parts, provider.Part{Text: text})
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
func (r parser) parseMessageImages(p string, v []byte, msg *provider.Message) error {
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

func (r parser) parsePart(p string, part []byte) (provider.Part, error) {
	if jsonx.KindOf(part) != jsonx.Object {
		return provider.Part{}, badParam(p, "'%s' must be an object.", p)
	}
	typ, ok := jsonx.Get(part, "type")
	if !ok || jsonx.KindOf(typ) != jsonx.String {
		return provider.Part{}, badParam(p+".type", "'%s.type' is required.", p)
	}
	switch string(typ[1 : len(typ)-1]) {
	case "text":
		t, ok := jsonx.Get(part, "text")
		if !ok || jsonx.KindOf(t) != jsonx.String {
			return provider.Part{}, badParam(p+".text", "'%s.text' must be a string.", p)
		}
		return provider.Part{Text: t[1 : len(t)-1]}, nil
	case "image_url":
		iu, ok := jsonx.Get(part, "image_url")
		if !ok {
			return provider.Part{}, badParam(p+".image_url", "'%s.image_url' is required.", p)
		}
		var u []byte
		switch jsonx.KindOf(iu) {
		case jsonx.String:
			u = iu
		case jsonx.Object:
			if u, ok = jsonx.Get(iu, "url"); !ok || jsonx.KindOf(u) != jsonx.String {
				return provider.Part{}, badParam(p+".image_url.url", "'%s.image_url.url' must be a string.", p)
			}
		default:
			return provider.Part{}, badParam(p+".image_url", "'%s.image_url' must be an object with a url.", p)
		}
		r.ImageInputs++
		if r.ImageInputs > provider.MaxImageInputs {
			return provider.Part{}, badParam(p, "too many images in the request (at most %d).", provider.MaxImageInputs)
		}
		img, relabel, err := parseImageURL(p+".image_url.url", u)
		if err != nil {
			return provider.Part{}, err
		}
		r.Resolved = r.Resolved || relabel
		return provider.Part{Image: img}, nil
	}
	return provider.Part{}, badParam(p+".type", "Invalid value for '%s.type': supported types are text and image_url.", p)
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
func parseImageURL(param string, s []byte) (img *provider.ImageInput, relabel bool, err error) {
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
		if !provider.ValidBase64(payload) {
			return nil, false, badParam(param, "'%s' does not hold valid base64 image data.", param)
		}
		m, why := provider.CheckImageB64(label, payload)
		if why != "" {
			return nil, false, badParam(param, "'%s' is not a usable image: %s.", param, why)
		}
		return &provider.ImageInput{URL: u, MIME: m, B64: payload}, m != string(mime), nil
	case bytes.HasPrefix(u, []byte("https://")), bytes.HasPrefix(u, []byte("http://")):
		return &provider.ImageInput{URL: u}, false, nil
	}
	return nil, false, badParam(param, "'%s' must be a data: URL or an http(s) URL.", param)
}
