package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// Limits of the Images API.
const (
	maxImagesN     = 10
	maxEditImages  = 16
	maxEditFile    = 20 << 20 // Google's inline-data limit per request
	maxPromptBytes = 32 << 10
)

// imagesRequest is a parsed /v1/images/generations or /v1/images/edits call.
type imagesRequest struct {
	model, prompt string
	n             int
	aspect        string
	links         bool // response_format url
	inputs        []editImage
}

type editImage struct {
	mime string
	b64  []byte
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

// aspectFor maps an OpenAI size to the nearest supported aspect ratio.
func aspectFor(size string) (string, bool) {
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

// imagesParam applies one parameter common to both endpoints.
func (r *imagesRequest) param(k, v string) *apiError {
	switch k {
	case "model":
		r.model = v
	case "prompt":
		r.prompt = v
	case "n":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxImagesN {
			return errInvalid("n", "'n' must be an integer from 1 to 10.")
		}
		r.n = n
	case "size":
		a, ok := aspectFor(v)
		if !ok {
			return errInvalid("size", "'size' must be WIDTHxHEIGHT (e.g. 1024x1024, 1792x1024, 1024x1792) or auto.")
		}
		r.aspect = a
	case "response_format":
		switch v {
		case "b64_json", "":
			r.links = false
		case "url":
			r.links = true
		default:
			return errInvalid("response_format", "'response_format' must be b64_json or url.")
		}
	case "quality", "style", "user":
		// Accepted for compatibility; the model has no such settings.
	case "mask":
		return errInvalid("mask", "'mask' is not supported: Gemini edits the whole image from the prompt. Describe the area to change in the prompt instead.")
	default:
		return errInvalid(k, "Unrecognized request argument supplied: "+k)
	}
	return nil
}

func (r *imagesRequest) finish(defaultModel string) *apiError {
	if strings.TrimSpace(r.prompt) == "" {
		return errInvalid("prompt", "'prompt' is required.")
	}
	if len(r.prompt) > maxPromptBytes {
		return errInvalid("prompt", "'prompt' is too long.")
	}
	if r.model == "" {
		r.model = defaultModel
	}
	if r.n == 0 {
		r.n = 1
	}
	return nil
}

// parseGenerations reads the JSON body of /v1/images/generations.
func parseGenerations(body []byte) (*imagesRequest, *apiError) {
	if jsonx.KindOf(body) != jsonx.Object || !jsonx.Valid(body) {
		return nil, errInvalid("", "We could not parse the JSON body of your request: it must be one JSON object.")
	}
	r := &imagesRequest{}
	var aerr *apiError
	seen := map[string]bool{}
	jsonx.ObjectEach(body, func(key, v []byte) error {
		k := string(key)
		if seen[k] {
			aerr = errInvalid(k, "Duplicate key "+strconv.Quote(k)+" in the request body.")
			return errStop
		}
		seen[k] = true
		var s string
		switch jsonx.KindOf(v) {
		case jsonx.Null:
			return nil
		case jsonx.String:
			s, _ = jsonx.Unquote(v)
		case jsonx.Number:
			if k != "n" {
				aerr = errInvalid(k, "'"+k+"' must be a string.")
				return errStop
			}
			s = string(v)
		default:
			aerr = errInvalid(k, "'"+k+"' has the wrong type.")
			return errStop
		}
		if k == "n" && jsonx.KindOf(v) != jsonx.Number {
			aerr = errInvalid("n", "'n' must be an integer from 1 to 10.")
			return errStop
		}
		if e := r.param(k, s); e != nil {
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

// imageMagic returns the media type of an image from its first bytes.
func imageMagic(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "image/webp"
	}
	return ""
}

// parseEdits reads the multipart body of /v1/images/edits part by part:
// each file is base64-encoded as it is read (the one copy it takes), checked
// by its magic bytes, and capped in size.
func parseEdits(ctx *fasthttp.RequestCtx) (*imagesRequest, *apiError) {
	ct := string(ctx.Request.Header.ContentType())
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, &apiError{Status: fasthttp.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "invalid_request",
			Message: "The request body must be multipart/form-data with a boundary."}
	}
	mr := multipart.NewReader(bytes.NewReader(ctx.PostBody()), params["boundary"])
	r := &imagesRequest{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errInvalid("", "The multipart body is malformed or truncated.")
		}
		name := part.FormName()
		switch {
		case name == "image" || name == "image[]":
			if len(r.inputs) >= maxEditImages {
				return nil, errInvalid("image", "Too many images (at most 16).")
			}
			img, aerr := readEditImage(part)
			if aerr != nil {
				return nil, aerr
			}
			r.inputs = append(r.inputs, img)
		case name == "":
			return nil, errInvalid("", "A multipart part has no name.")
		case part.FileName() != "" && name != "mask":
			return nil, errInvalid(name, "Unexpected file field: "+name)
		default:
			v, err := io.ReadAll(io.LimitReader(part, maxPromptBytes+1))
			if err != nil {
				return nil, errInvalid("", "The multipart body is malformed or truncated.")
			}
			if e := r.param(name, string(v)); e != nil {
				return nil, e
			}
		}
	}
	if len(r.inputs) == 0 {
		return nil, errInvalid("image", "'image' is required: send one or more image files (png, jpeg or webp).")
	}
	return r, nil
}

func readEditImage(part *multipart.Part) (editImage, *apiError) {
	var head [16]byte
	n, _ := io.ReadFull(part, head[:])
	mt := imageMagic(head[:n])
	if mt == "" {
		return editImage{}, errInvalid("image", "Each 'image' must be a PNG, JPEG or WebP file (checked by its content).")
	}
	var buf bytes.Buffer
	enc := base64.NewEncoder(base64.StdEncoding, &buf)
	enc.Write(head[:n])
	copied, err := io.Copy(enc, io.LimitReader(part, maxEditFile))
	if err != nil {
		return editImage{}, errInvalid("image", "The multipart body is malformed or truncated.")
	}
	if copied+int64(n) >= maxEditFile {
		return editImage{}, &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Type: "invalid_request_error",
			Code: "request_too_large", Param: "image", Message: "An image file is larger than 20 MiB."}
	}
	enc.Close()
	return editImage{mime: mt, b64: buf.Bytes()}, nil
}

// chatBody synthesises the chat request that asks the model for one image:
// the prompt, then the input images in order.
func (r *imagesRequest) chatBody() []byte {
	size := 128 + len(r.prompt)
	for _, in := range r.inputs {
		size += len(in.b64) + 80
	}
	b := make([]byte, 0, size)
	b = append(b, `{"model":`...)
	b = jsonx.AppendString(b, r.model)
	b = append(b, `,"messages":[{"role":"user","content":[{"type":"text","text":`...)
	b = jsonx.AppendString(b, r.prompt)
	b = append(b, '}')
	for _, in := range r.inputs {
		b = append(b, `,{"type":"image_url","image_url":{"url":"data:`...)
		b = append(b, in.mime...)
		b = append(b, ";base64,"...)
		b = append(b, in.b64...)
		b = append(b, `"}}`...)
	}
	b = append(b, `]}]`...)
	if r.aspect != "" {
		b = append(b, `,"image_config":{"aspect_ratio":`...)
		b = jsonx.AppendString(b, r.aspect)
		b = append(b, '}')
	}
	return append(b, '}')
}

// defaultImageModel is the first image model configured.
func defaultImageModel(models []string) string {
	for _, m := range models {
		if strings.Contains(m, "image") {
			return m
		}
	}
	if len(models) > 0 {
		return models[0]
	}
	return ""
}

// handleImages serves /v1/images/generations and /v1/images/edits through
// the same limits, routing and accounting as chat.
func (s *Server) handleImages(ctx *fasthttp.RequestCtx, st *State, rid string, edits bool) {
	l := &reqLog{start: time.Now(), id: rid, known: st.Gateway.Router().Knows, gw: st.Gateway, route: "images"}
	caller, aerr := authenticate(ctx, st.Keys)
	if aerr != nil {
		s.fail(ctx, l, aerr)
		return
	}
	l.caller = caller
	var ir *imagesRequest
	if edits {
		l.route = "images_edits"
		ir, aerr = parseEdits(ctx)
	} else if !jsonContentType(ctx.Request.Header.ContentType()) {
		aerr = errContentType
	} else {
		ir, aerr = parseGenerations(ctx.PostBody())
	}
	if aerr == nil {
		aerr = ir.finish(defaultImageModel(st.Gateway.Router().Models()))
	}
	if aerr != nil {
		s.fail(ctx, l, aerr)
		return
	}
	l.model = ir.model
	req, err := provider.ParseChatRequest(ir.chatBody())
	if err != nil {
		s.fail(ctx, l, toAPIError(err, ir.model))
		return
	}
	call := &gateway.Call{ID: s.ids.next(), Caller: caller, Req: req}
	l.call = call
	rctx, cancel := context.WithCancel(context.Background())
	stopWatch := watchClient(ctx.Conn(), func() { l.gone = true; cancel() })
	ans, err := st.Gateway.Images(rctx, call, ir.n, ir.links)
	stopWatch()
	cancel()
	setLimitHeaders(ctx, call.Limit)
	if err != nil {
		var cp *gateway.ContentPolicyError
		if errors.As(err, &cp) {
			s.fail(ctx, l, &apiError{Status: fasthttp.StatusBadRequest, Type: "invalid_request_error",
				Code: "content_policy_violation", Message: cp.Reason})
			return
		}
		l.err = err
		s.fail(ctx, l, s.journeyError(err, call))
		return
	}
	defer ans.Release()
	if len(ans.Served) > 0 {
		l.served = ans.Served[0]
		l.served.Attempts = 0
		for _, sv := range ans.Served {
			l.served.Attempts += sv.Attempts
		}
	}
	ctx.Response.Header.Set("x-nanogate-provider", ans.Provider())
	ctx.SetContentType("application/json")
	// The body is a buffer of this request's own: no copy into fasthttp's.
	ctx.Response.SetBodyRaw(appendImagesResponse(make([]byte, 0, imagesSize(ans)), ans))
	// Records were written per upstream call by the gateway.
	l.call = nil
	l.status, l.usage = fasthttp.StatusOK, ans.Usage
	s.logRequest(l)
}

func imagesSize(a *gateway.ImagesAnswer) int {
	n := 256
	for _, img := range a.Images {
		n += len(img.B64) + len(img.URL) + 32
	}
	return n
}

// appendImagesResponse writes OpenAI's images response with the usage block
// of GPT image models (output tokens are 1290 per image).
func appendImagesResponse(b []byte, a *gateway.ImagesAnswer) []byte {
	b = append(b, `{"created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"data":[`...)
	for i, img := range a.Images {
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
		b = append(b, img.B64...)
		b = append(b, `"}`...)
	}
	u := a.Usage
	b = append(b, `],"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens, 10)
	b = append(b, `,"input_tokens_details":{"text_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens, 10)
	b = append(b, `,"image_tokens":0},"output_tokens":`...)
	b = strconv.AppendInt(b, u.ImageTokens, 10)
	b = append(b, `,"output_tokens_details":{"text_tokens":0,"image_tokens":`...)
	b = strconv.AppendInt(b, u.ImageTokens, 10)
	b = append(b, `},"total_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens+u.ImageTokens, 10)
	return append(b, "}}\n"...)
}
