package openai

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"nanogate/catalog"
	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
)

func badImagesParam(param, msg string) error { return &provider.RequestError{Param: param, Msg: msg} }

// Limits of the Images API.
const (
	maxImagesN = 10
	// MaxEditFile caps one input image (Google's inline-data limit).
	MaxEditFile = 20 << 20
	// MaxPromptBytes caps a prompt.
	MaxPromptBytes = 32 << 10
)

// ImagesRequest is a parsed /v1/images/generations or /v1/images/edits call.
type ImagesRequest struct {
	Model, Prompt string
	N             int
	Aspect        string
	// ImageSize is an image size the request named (size: 512, 1K, 2K or
	// 4K); else LongSide, the longer side of a WIDTHxHEIGHT size (0 for
	// auto), and Quality pick one (ImagesChatRequest).
	ImageSize string
	LongSide  int
	Quality   string
	// Links: response_format url.
	Links  bool
	Inputs []InputImage
}

// InputImage is an image to edit, base64-encoded.
type InputImage struct {
	MIME string
	B64  []byte
}

// sizeRatios are OpenAI's sizes and their Gemini aspect ratios.
var sizeRatios = map[string]string{
	"1024x1024": "1:1", "1792x1024": "16:9", "1024x1792": "9:16", "1536x1024": "3:2", "1024x1536": "2:3",
	"256x256": "1:1", "512x512": "1:1", "auto": "",
}

// geminiRatios are the ratios gemini-2.5-flash-image takes, as numbers.
var geminiRatios = []struct {
	name string
	v    float64
}{{"1:1", 1}, {"2:3", 2.0 / 3}, {"3:2", 1.5}, {"3:4", 0.75}, {"4:3", 4.0 / 3}, {"4:5", 0.8}, {"5:4", 1.25},
	{"9:16", 9.0 / 16}, {"16:9", 16.0 / 9}, {"21:9", 21.0 / 9}}

// AspectFor maps an OpenAI size to the nearest supported aspect ratio.
func AspectFor(size string) (string, bool) {
	if r, ok := sizeRatios[size]; ok {
		return r, true
	}
	w, h, ok := strings.Cut(size, "x")
	if !ok {
		return "", false
	}
	wi, err1 := strconv.Atoi(w)
	hi, err2 := strconv.Atoi(h)
	if err1 != nil || err2 != nil || wi <= 0 || hi <= 0 || wi > 16384 || hi > 16384 {
		return "", false
	}
	want := math.Log(float64(wi) / float64(hi))
	best, bestD := "", math.Inf(1)
	for _, r := range geminiRatios {
		if d := math.Abs(math.Log(r.v) - want); d < bestD {
			best, bestD = r.name, d
		}
	}
	return best, true
}

// Param applies one parameter of either endpoint (a JSON field or a
// multipart form value).
func (r *ImagesRequest) Param(k, v string) error {
	switch k {
	case "model":
		if len(v) > provider.MaxModelBytes {
			return badImagesParam("model", "'model' must be at most 256 bytes.")
		}
		r.Model = v
	case "prompt":
		r.Prompt = v
	case "n":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxImagesN {
			return badImagesParam("n", "'n' must be an integer from 1 to 10.")
		}
		r.N = n
	case "size":
		if up := strings.ToUpper(v); imageSizes[up] > 0 {
			r.ImageSize = up
			return nil
		}
		a, ok := AspectFor(v)
		if !ok {
			return badImagesParam("size", "'size' must be WIDTHxHEIGHT (e.g. 1024x1024, 1792x1024, 1024x1792), auto, or one of Gemini's sizes 512, 1K, 2K, 4K.")
		}
		r.Aspect = a
		if w, h, ok := strings.Cut(v, "x"); ok {
			wi, _ := strconv.Atoi(w)
			hi, _ := strconv.Atoi(h)
			r.LongSide = max(wi, hi)
		}
	case "response_format":
		switch v {
		case "b64_json", "":
			r.Links = false
		case "url":
			r.Links = true
		default:
			return badImagesParam("response_format", "'response_format' must be b64_json or url.")
		}
	case "quality":
		switch v {
		case "", "auto", "standard", "medium", "low", "high", "hd":
			r.Quality = v
		default:
			return badImagesParam("quality", "'quality' must be auto, low, medium, high, standard or hd.")
		}
	case "style", "user":
		// Accepted for compatibility; the model has no such settings.
	case "stream":
		if v == "true" {
			return badImagesParam("stream", "Streaming image generation is not supported: send stream false or leave it out.")
		}
	case "output_format":
		if v != "png" && v != "" {
			return badImagesParam("output_format", "'output_format' must be png: the model answers PNG images.")
		}
	case "mask":
		return badImagesParam("mask", "'mask' is not supported: Gemini edits the whole image from the prompt. Describe the area to change in the prompt instead.")
	default:
		return badImagesParam(k, "Unrecognized request argument supplied: "+k)
	}
	return nil
}

// Finish checks what the request must hold once every parameter is read,
// and fills in the defaults: the model (defaultModel when it names none)
// and n.
func (r *ImagesRequest) Finish(defaultModel string) error {
	if strings.TrimSpace(r.Prompt) == "" {
		return badImagesParam("prompt", "'prompt' is required.")
	}
	if len(r.Prompt) > MaxPromptBytes {
		return badImagesParam("prompt", "'prompt' is too long.")
	}
	if r.Model == "" {
		r.Model = defaultModel
	}
	if r.N == 0 {
		r.N = 1
	}
	return nil
}

// ParseImagesGeneration reads the JSON body of /v1/images/generations.
func ParseImagesGeneration(body []byte) (*ImagesRequest, error) {
	if jsonx.KindOf(body) != jsonx.Object || !jsonx.Valid(body) {
		return nil, badImagesParam("", "We could not parse the JSON body of your request: it must be one JSON object.")
	}
	r := &ImagesRequest{}
	var aerr error
	seen := map[string]bool{}
	jsonx.ObjectEach(body, func(key, v []byte) error {
		k := string(key)
		if seen[k] {
			aerr = badImagesParam(k, "Duplicate key "+strconv.Quote(k)+" in the request body.")
			return errStop
		}
		seen[k] = true
		var s string
		switch jsonx.KindOf(v) {
		case jsonx.Null:
			return nil
		case jsonx.Boolean:
			if k != "stream" {
				aerr = badImagesParam(k, "'"+k+"' must be a string.")
				return errStop
			}
			s = string(v)
		case jsonx.String:
			s, _ = jsonx.Unquote(v)
		case jsonx.Number:
			if k != "n" {
				aerr = badImagesParam(k, "'"+k+"' must be a string.")
				return errStop
			}
			s = string(v)
		default:
			aerr = badImagesParam(k, "'"+k+"' has the wrong type.")
			return errStop
		}
		if k == "n" && jsonx.KindOf(v) != jsonx.Number {
			aerr = badImagesParam("n", "'n' must be an integer from 1 to 10.")
			return errStop
		}
		if e := r.Param(k, s); e != nil {
			aerr = e
			return errStop
		}
		return nil
	})
	if aerr != nil {
		return nil, aerr
	}
	return r, nil
}

var errStop = errors.New("stop")

// chatBody synthesises the chat request that asks the model for one image:
// the prompt, then the input images in order.
func (r *ImagesRequest) chatBody() []byte {
	size := 128 + len(r.Prompt)
	for _, in := range r.Inputs {
		size += len(in.B64) + 80
	}
	b := make([]byte, 0, size)
	b = append(b, `{"model":`...)
	b = jsonx.AppendString(b, r.Model)
	b = append(b, `,"messages":[{"role":"user","content":[{"type":"text","text":`...)
	b = jsonx.AppendString(b, r.Prompt)
	b = append(b, '}')
	for _, in := range r.Inputs {
		b = append(b, `,{"type":"image_url","image_url":{"url":"data:`...)
		b = append(b, in.MIME...)
		b = append(b, ";base64,"...)
		b = append(b, in.B64...)
		b = append(b, `"}}`...)
	}
	b = append(b, `]}]`...)
	if r.Aspect != "" || r.ImageSize != "" {
		b = append(b, `,"image_config":{`...)
		if r.Aspect != "" {
			b = append(b, `"aspect_ratio":`...)
			b = jsonx.AppendString(b, r.Aspect)
		}
		if r.ImageSize != "" {
			if r.Aspect != "" {
				b = append(b, ',')
			}
			b = append(b, `"image_size":`...)
			b = jsonx.AppendString(b, r.ImageSize)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// imageSizes are Gemini's image sizes and the pixels of their longer side.
var imageSizes = map[string]int{"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}

// ChatRequest is the chat request an Images API request runs as: the
// prompt, then the input images in order, asking for one image. Its image
// size is resolved against the catalogue's model m (nil: none known): the
// size named; else for WIDTHxHEIGHT the smallest size the model makes that
// is at least as large (its largest when none is); else by quality (low:
// the smallest, high or hd: the next above the default); else the model's
// default.
func (r *ImagesRequest) ChatRequest(m *catalog.Model) (*provider.ChatRequest, error) {
	if r.ImageSize == "" && m != nil {
		r.ImageSize = pickSize(m.SizeNames(), m.DefaultSize, r.LongSide, r.Quality)
	}
	return ParseChatRequest(r.chatBody())
}

func pickSize(sizes []string, def string, longSide int, quality string) string {
	if len(sizes) == 0 {
		return ""
	}
	if longSide > 0 {
		for _, s := range sizes {
			if imageSizes[s] >= longSide {
				return s
			}
		}
		return sizes[len(sizes)-1]
	}
	i := slices.Index(sizes, def)
	switch quality {
	case "low":
		return sizes[0]
	case "high", "hd":
		if i >= 0 && i+1 < len(sizes) {
			return sizes[i+1]
		}
	}
	return def
}

// AppendImagesResponse writes OpenAI's images response for the images made
// and their usage, with the usage block of GPT image models: input tokens
// split into text and image (promptImage, the upstreams' count, bounded by
// the prompt billed), output tokens all image tokens.
func AppendImagesResponse(b []byte, imgs []provider.Image, u gateway.Usage, promptImage int64) []byte {
	if b == nil {
		n := 256
		for _, img := range imgs {
			n += len(img.B64) + len(img.URL) + 32
		}
		b = make([]byte, 0, n)
	}
	var s segs
	s.small = b
	renderImages(&s, imgs, u, promptImage, false)
	return s.small
}

// appendImagesHead writes the images response up to its first image.
func appendImagesHead(b []byte, created int64) []byte {
	b = append(b, `{"created":`...)
	b = strconv.AppendInt(b, created, 10)
	return append(b, `,"data":[`...)
}

// appendImagesTail writes what follows the last image: the usage block of
// GPT image models.
func appendImagesTail(b []byte, u gateway.Usage, promptImage int64) []byte {
	inImage := promptImageTokens(promptImage, u.PromptTokens)
	b = append(b, `],"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens, 10)
	b = append(b, `,"input_tokens_details":{"text_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens-inImage, 10)
	b = append(b, `,"image_tokens":`...)
	b = strconv.AppendInt(b, inImage, 10)
	b = append(b, `},"output_tokens":`...)
	b = strconv.AppendInt(b, u.ImageTokens, 10)
	b = append(b, `,"output_tokens_details":{"text_tokens":0,"image_tokens":`...)
	b = strconv.AppendInt(b, u.ImageTokens, 10)
	b = append(b, `},"total_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens+u.ImageTokens, 10)
	return append(b, "}}\n"...)
}

// ImagesBody is a rendered images response that writes its images' base64
// from the upstream buffers to the client without a copy (as ChatBody does).
type ImagesBody struct{ segBody }

// NewImagesBody renders the images response (AppendImagesResponse's);
// release, if not nil, frees the buffers behind the images once the body
// is closed.
func NewImagesBody(imgs []provider.Image, u gateway.Usage, promptImage int64, release func()) *ImagesBody {
	b := &ImagesBody{}
	b.release = release
	b.segs.init(512)
	renderImages(&b.segs, imgs, u, promptImage, true)
	return b
}

// renderImages writes the images response into s: each image's base64 as
// a piece of its own when ext, else copied into s.small.
func renderImages(s *segs, imgs []provider.Image, u gateway.Usage, promptImage int64, ext bool) {
	b := s.small
	from := len(b)
	b = appendImagesHead(b, time.Now().Unix())
	for i, img := range imgs {
		if i > 0 {
			b = append(b, ',')
		}
		if img.URL != "" {
			b = append(b, `{"url":`...)
			b = jsonx.AppendString(b, img.URL)
			b = append(b, '}')
			continue
		}
		b = append(b, `{"b64_json":"`...)
		if ext {
			s.small = b
			s.cut(from)
			s.ext(img.B64)
			b, from = s.small, len(s.small)
		} else {
			b = append(b, img.B64...)
		}
		b = append(b, `"}`...)
	}
	s.small = appendImagesTail(b, u, promptImage)
	if ext {
		s.cut(from)
	}
}
