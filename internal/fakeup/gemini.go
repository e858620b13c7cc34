package fakeup

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
)

const geminiJSON = "application/json; charset=UTF-8"

// Plan variants of the Gemini API.
const (
	gemJSON  = iota // :generateContent
	gemSSE          // :streamGenerateContent?alt=sse
	gemArray        // :streamGenerateContent without alt=sse: one JSON array, streamed
)

// googleHeaders are the headers recorded on Google's answers (README of the fixtures).
var googleHeaders = http.Header{
	"Server":                 {"scaffolding on HTTPServer2"},
	"Vary":                   {"Origin", "X-Origin", "Referer"},
	"X-Content-Type-Options": {"nosniff"},
	"X-Frame-Options":        {"SAMEORIGIN"},
	"X-Xss-Protection":       {"0"},
}

var (
	gemJSONHeader = http.Header{"Content-Type": {geminiJSON}}
	gemSSEHeader  = http.Header{"Content-Type": {"text/event-stream"}, "Content-Disposition": {"attachment"}}
)

// textPieces is Text as the stream sends it, in three events like gemini/stream_image.sse.
var textPieces = []string{"Here is", " your nano banana dish,", " served Gemini-style."}

// Wire shapes of a generateContent answer; field order follows the fixtures.
type gResp struct {
	Candidates    []gCand `json:"candidates"`
	UsageMetadata gUsage  `json:"usageMetadata"`
	ModelVersion  string  `json:"modelVersion"`
	ResponseID    string  `json:"responseId"`
}

type gCand struct {
	Content      gContent `json:"content"`
	FinishReason string   `json:"finishReason,omitempty"`
	Index        int      `json:"index"`
}

type gContent struct {
	Parts []gPart `json:"parts,omitempty"`
	Role  string  `json:"role"`
}

type gPart struct {
	Text             string `json:"text,omitempty"`
	InlineData       *gBlob `json:"inlineData,omitempty"`
	ThoughtSignature string `json:"thoughtSignature,omitempty"`
}

type gBlob struct {
	MimeType string `json:"mimeType"`
	Data     string `json:"data"`
}

type gUsage struct {
	PromptTokenCount        int         `json:"promptTokenCount"`
	CandidatesTokenCount    int         `json:"candidatesTokenCount,omitempty"`
	TotalTokenCount         int         `json:"totalTokenCount"`
	PromptTokensDetails     []gModality `json:"promptTokensDetails"`
	CandidatesTokensDetails []gModality `json:"candidatesTokensDetails,omitempty"`
}

type gModality struct {
	Modality   string `json:"modality"`
	TokenCount int    `json:"tokenCount"`
}

func (s *Server) serveGemini(w http.ResponseWriter, r *http.Request, body []byte, set *settings) {
	h := w.Header()
	for k, v := range googleHeaders {
		h[k] = v // shared read-only slices
	}
	model, method, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1beta/models/"), ":")
	if !ok || !strings.HasPrefix(r.URL.Path, "/v1beta/models/") || r.Method != http.MethodPost ||
		(method != "generateContent" && method != "streamGenerateContent") {
		s.reply(w, r, http.StatusNotFound, geminiJSON, googleError(http.StatusNotFound, "Method not found.", ""))
		return
	}
	f, faulty := s.takeFault()
	if faulty && s.applyFault(w, r, f, model) {
		return
	}
	// Google checks the key before the model: a bad key is 400 API_KEY_INVALID, none at all 403.
	if s.key != "" {
		switch key := r.Header.Get("X-Goog-Api-Key"); {
		case key == "":
			s.reply(w, r, http.StatusForbidden, geminiJSON, fx.gNoKey)
			return
		case key != s.key:
			s.reply(w, r, http.StatusBadRequest, geminiJSON, fx.gBadKey)
			return
		}
	}
	if !set.models[model] {
		s.reply(w, r, http.StatusNotFound, geminiJSON, geminiNotFound(model))
		return
	}
	if msg, field := checkGeminiBody(body); msg != "" {
		s.reply(w, r, http.StatusBadRequest, geminiJSON, googleError(http.StatusBadRequest, msg, field))
		return
	}
	variant := gemJSON
	if method == "streamGenerateContent" {
		variant = gemArray
		if r.URL.Query().Get("alt") == "sse" {
			variant = gemSSE
		}
	}
	size := requestedImageSize(body)
	p := s.planFor(set, model+"@"+size, variant, func() *plan { return geminiPlan(set, model, size, variant) })
	var ib [32]byte
	id := strconv.AppendUint(append(ib[:0], "fakeup"...), s.seq.Add(1), 36)
	s.deliver(w, r, p, id, f)
}

// requestedImageSize is generationConfig.imageConfig.imageSize of a request
// ("" when absent), found without decoding the whole body.
func requestedImageSize(body []byte) string {
	const key = `"imageSize":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return ""
	}
	rest := body[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > 8 {
		return ""
	}
	return string(rest[:j])
}

// ImageTokensFor is what Google reports per generated image of model at
// size (its docs' figures): 1290 for 2.5 Flash Image; 1120, or 2000 at 4K,
// for 3 Pro Image; 747 / 1120 / 1680 / 2520 at 512 / 1K / 2K / 4K for 3.1
// Flash Image.
func ImageTokensFor(model, size string) int {
	switch {
	case strings.HasPrefix(model, "gemini-3-pro-image"):
		if size == "4K" {
			return 2000
		}
		return 1120
	case strings.HasPrefix(model, "gemini-3.1-flash-image"):
		switch size {
		case "512":
			return 747
		case "2K":
			return 1680
		case "4K":
			return 2520
		}
		return 1120
	case strings.HasPrefix(model, "gemini-3.1-flash-lite-image"):
		return 1120
	}
	return ImageTokens
}

// geminiPlan builds Google's answer for a configuration, a model, the image
// size asked for and a variant.
func geminiPlan(set *settings, model, size string, variant int) *plan {
	p := &plan{header: gemJSONHeader}
	var objs [][]byte // compact JSON of each answer object (one unless streaming)
	var verbatim []byte
	switch set.outcome {
	case OutcomeImage:
		objs, p.split, p.imgs = geminiImageObjects(set, model, ImageTokensFor(model, size), variant != gemJSON)
		p.sigs = set.signatures
	case OutcomeTextOnly:
		verbatim = fx.gTextOnly
	case OutcomeNoImage:
		verbatim = fx.gNoImage
	case OutcomeImageSafety:
		verbatim = fx.gImageSafety
	case OutcomePromptBlocked:
		verbatim = fx.gPromptBlocked
	}
	if verbatim != nil {
		objs = [][]byte{compact(verbatim)}
	}
	switch variant {
	case gemJSON:
		if verbatim == nil {
			verbatim = indent(objs[0], "  ")
		}
		p.events = []*tmpl{compile(verbatim)}
	case gemSSE:
		for _, o := range objs {
			p.events = append(p.events, event(googleLine(o), "\r\n\r\n"))
		}
		p.stream, p.header = true, gemSSEHeader
	case gemArray:
		for i, o := range objs {
			sep := ",\r\n"
			if i == 0 {
				sep = "["
			}
			b := append([]byte(sep), bytes.TrimSuffix(indent(o, "  "), []byte("\n"))...)
			p.events = append(p.events, compile(append(b, '\n')))
		}
		p.events = append(p.events, compile([]byte("]")))
		p.stream = true
	}
	return p
}

// geminiImageObjects builds the image answer: one object, or for a stream the text events with cumulative
// usage and then one event per image. It returns the objects, the index of the first image event and the
// images' base64.
func geminiImageObjects(set *settings, model string, perImage int, stream bool) (objs [][]byte, split int, imgs [][]byte) {
	n, pt, tt := set.images, set.promptTokens, set.textTokens
	imgs = make([][]byte, n)
	for i := range n {
		imgs[i] = pngFor(set.imageSize, i).b64
	}
	usage := func(cand int, final bool) gUsage {
		u := gUsage{
			PromptTokenCount: pt, CandidatesTokenCount: cand, TotalTokenCount: pt + cand,
			PromptTokensDetails: []gModality{{"TEXT", pt}},
		}
		if final && n > 0 {
			// The trap: only IMAGE is listed, the text tokens are the difference.
			u.CandidatesTokensDetails = []gModality{{"IMAGE", perImage * n}}
		}
		return u
	}
	obj := func(parts []gPart, final bool, cand int) []byte {
		c := gCand{Content: gContent{Parts: parts, Role: "model"}}
		if final {
			c.FinishReason = "STOP"
		}
		return marshal(gResp{
			Candidates: []gCand{c}, UsageMetadata: usage(cand, final), ModelVersion: model, ResponseID: markID,
		})
	}
	image := func(i int) gPart {
		gp := gPart{InlineData: &gBlob{"image/png", imageMark(i)}}
		if set.signatures {
			gp.ThoughtSignature = sigMark(i)
		}
		return gp
	}
	total := tt + perImage*n

	if !stream {
		var parts []gPart
		if tt > 0 {
			parts = append(parts, gPart{Text: Text})
		}
		for i := range n {
			parts = append(parts, image(i))
		}
		return [][]byte{obj(parts, true, total)}, 0, imgs
	}
	if tt > 0 {
		for k, piece := range textPieces {
			last := n == 0 && k == len(textPieces)-1
			objs = append(objs, obj([]gPart{{Text: piece}}, last, tt*(k+1)/len(textPieces)))
		}
	}
	split = len(objs)
	for i := range n {
		objs = append(objs, obj([]gPart{image(i)}, i == n-1, tt+perImage*(i+1)))
	}
	if len(objs) == 0 {
		objs = append(objs, obj(nil, true, 0))
	}
	return objs, split, imgs
}

// geminiNotFound is the 404 fixture naming model.
func geminiNotFound(model string) []byte {
	return bytes.Replace(fx.gNotFound, []byte(fixtureModel), jsonString(model), 1)
}

// googleStatus names an HTTP status the way google.rpc.Code does.
func googleStatus(code int) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 500:
		return "INTERNAL"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	return "UNKNOWN"
}

// googleError builds a Google error body in the fixtures' layout; a field adds a google.rpc.BadRequest detail
// like error_400_invalid_argument.json.
func googleError(code int, msg, field string) []byte {
	type violation struct {
		Field       string `json:"field"`
		Description string `json:"description"`
	}
	type detail struct {
		Type            string      `json:"@type"`
		FieldViolations []violation `json:"fieldViolations"`
	}
	type body struct {
		Code    int      `json:"code"`
		Message string   `json:"message"`
		Status  string   `json:"status"`
		Details []detail `json:"details,omitempty"`
	}
	b := body{Code: code, Message: msg, Status: googleStatus(code)}
	if field != "" {
		b.Details = []detail{{"type.googleapis.com/google.rpc.BadRequest", []violation{{field, msg}}}}
	}
	return indent(marshal(map[string]body{"error": b}), "  ")
}
