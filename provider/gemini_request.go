package provider

import (
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"sync"

	"nanogate/internal/jsonx"
)

// Token figures of Google's image model that the request translation uses.
const (
	// GeminiImageTokens is what gemini-2.5-flash-image counts in its output
	// for one generated image (usageMetadata.candidatesTokensDetails IMAGE).
	GeminiImageTokens = 1290
	// geminiMaxOutputTokens is the model's output limit; Google refuses a
	// larger maxOutputTokens.
	geminiMaxOutputTokens = 32768
)

// GeminiMaxOutputTokens is the max_tokens rule. OpenAI's max_tokens (or
// max_completion_tokens) counts the answer's text; Google's maxOutputTokens
// counts text and image tokens of one candidate together, so a client that
// sends max_tokens: 1290 ("one image's worth", as reseller docs say) would
// get MAX_TOKENS and no image. The gateway treats max_tokens as the text
// allowance and adds room for one image per choice (GeminiImageTokens),
// capped at the model's output limit. Without max_tokens nothing is sent
// (Google's default, the model's limit); when no image is asked for
// (modalities ["text"]) max_tokens passes unchanged.
func GeminiMaxOutputTokens(maxTokens int64, images bool) int64 {
	if maxTokens <= 0 {
		return 0
	}
	if images {
		maxTokens += GeminiImageTokens
	}
	return min(maxTokens, geminiMaxOutputTokens)
}

// geminiPlan is what checking a request decided, for writing it.
type geminiPlan struct {
	// modalities is the content of responseModalities.
	modalities string
	images     bool // IMAGE is among the modalities
	candidates int  // candidateCount, 0 to leave it out
	maxOutput  int64
	// penalties: raw JSON numbers, nil when absent or zero.
	presence, frequency []byte
}

func isSystemRole(role string) bool { return role == "system" || role == "developer" }

// geminiRole maps an OpenAI role to Google's: user or model.
func geminiRole(role string) string {
	if role == "assistant" {
		return "model"
	}
	return "user"
}

// geminiParam is what the gemini kind does with one of ChatRequest.Params:
// nil when the value is accepted (mapped or harmless), else the refusal.
type geminiParam func(name string, v []byte, plan *geminiPlan) *RequestError

var geminiParams = map[string]geminiParam{
	// Bookkeeping that does not change the answer.
	"user": accept, "metadata": accept, "store": accept, "safety_identifier": accept,
	"prompt_cache_key": accept, "parallel_tool_calls": accept,
	"modalities":         modalitiesParam,
	"presence_penalty":   penaltyParam,
	"frequency_penalty":  penaltyParam,
	"logprobs":           refuseUnless(isFalse, "the gateway does not return log probabilities"),
	"top_logprobs":       refuseUnless(isZero, "the gateway does not return log probabilities"),
	"logit_bias":         refuseUnless(isEmptyObject, "Google's API has no logit bias"),
	"response_format":    refuseUnless(isTextFormat, "the image model answers with text and images, not JSON"),
	"tools":              refuseUnless(isEmptyArray, "the image model has no tools"),
	"functions":          refuseUnless(isEmptyArray, "the image model has no tools"),
	"tool_choice":        refuseUnless(isNoneOrAuto, "the image model has no tools"),
	"function_call":      refuseUnless(isNoneOrAuto, "the image model has no tools"),
	"service_tier":       refuseUnless(isString("auto", "default"), "only the default service tier is available"),
	"verbosity":          refuseUnless(isString("medium"), "the image model has no verbosity setting"),
	"reasoning_effort":   refuseUnless(never, "the image model has no reasoning setting"),
	"prediction":         refuseUnless(never, "predicted outputs are not supported"),
	"audio":              refuseUnless(never, "the image model does not produce audio"),
	"web_search_options": refuseUnless(never, "the image model does not search the web"),
}

func accept(string, []byte, *geminiPlan) *RequestError { return nil }

func refuseUnless(ok func([]byte) bool, why string) geminiParam {
	return func(name string, v []byte, _ *geminiPlan) *RequestError {
		if ok(v) {
			return nil
		}
		return badParam(name, "'%s' is not supported by this model's provider: %s.", name, why)
	}
}

func never([]byte) bool { return false }

func isFalse(v []byte) bool { b, err := jsonx.Bool(v); return err == nil && !b }

func isZero(v []byte) bool { n, err := jsonx.Float(v); return err == nil && n == 0 }

func isEmptyArray(v []byte) bool {
	_, ok := jsonx.Index(v, 0)
	return !ok && jsonx.KindOf(v) == jsonx.Array
}

func isEmptyObject(v []byte) bool {
	if jsonx.KindOf(v) != jsonx.Object {
		return false
	}
	empty := true
	jsonx.ObjectEach(v, func(_, _ []byte) error { empty = false; return nil })
	return empty
}

func isString(allowed ...string) func([]byte) bool {
	return func(v []byte) bool {
		s, err := jsonx.Unquote(v)
		if err != nil || jsonx.KindOf(v) != jsonx.String {
			return false
		}
		for _, a := range allowed {
			if s == a {
				return true
			}
		}
		return false
	}
}

var isNoneOrAuto = isString("none", "auto")

func isTextFormat(v []byte) bool {
	t, ok := jsonx.Get(v, "type")
	return ok && isString("text")(t)
}

// modalitiesParam maps OpenAI's output modalities to responseModalities.
func modalitiesParam(name string, v []byte, plan *geminiPlan) *RequestError {
	var text, image bool
	err := jsonx.ArrayEach(v, func(_ int, m []byte) error {
		s, _ := jsonx.Unquote(m)
		switch s {
		case "text":
			text = true
		case "image":
			image = true
		default:
			return badParam(name, "'%s' may hold \"text\" and \"image\"; this model does not produce %q.", name, s)
		}
		return nil
	})
	if re, ok := err.(*RequestError); ok {
		return re
	}
	if err != nil || !(text || image) {
		return badParam(name, "'%s' must be a non-empty array of \"text\" and \"image\".", name)
	}
	switch {
	case text && image:
		plan.modalities = `"TEXT","IMAGE"`
	case image:
		plan.modalities = `"IMAGE"`
	default:
		plan.modalities = `"TEXT"`
	}
	plan.images = image
	return nil
}

// wantsImages reports whether req asks for images: it does unless its
// modalities say text only.
func wantsImages(req *ChatRequest) bool {
	if !slices.Contains(req.Params, "modalities") {
		return true
	}
	v, _ := jsonx.Get(req.Raw, "modalities")
	var plan geminiPlan
	if modalitiesParam("modalities", v, &plan) != nil {
		return true
	}
	return plan.images
}

func penaltyParam(name string, v []byte, plan *geminiPlan) *RequestError {
	f, err := jsonx.Float(v)
	if err != nil || f < -2 || f > 2 {
		return badParam(name, "'%s' must be a number from -2 to 2.", name)
	}
	if f == 0 {
		return nil
	}
	if name == "presence_penalty" {
		plan.presence = v
	} else {
		plan.frequency = v
	}
	return nil
}

// geminiCandidatesAllowed reports whether model accepts candidateCount above
// 1. The 2.x models do (gemini-2.5-flash-image: 1 to 8); Google's 3.x models
// answer "Multiple candidates is not enabled for this model".
func geminiCandidatesAllowed(model string) bool {
	return strings.HasPrefix(model, "gemini-2.")
}

// planGemini checks that req can be sent to Google's model as it is meant:
// every parameter is mapped or harmless, n is possible, the messages fit
// Google's shape. It runs before any image is fetched.
func planGemini(req *ChatRequest, model string) (*geminiPlan, *RequestError) {
	plan := &geminiPlan{modalities: `"TEXT","IMAGE"`, images: true}
	for _, name := range req.Params {
		check, known := geminiParams[name]
		if !known {
			return nil, badParam(name, "'%s' is not supported by this model's provider.", name)
		}
		v, _ := jsonx.Get(req.Raw, name)
		if err := check(name, v, plan); err != nil {
			return nil, err
		}
	}
	if req.N > 1 {
		if !geminiCandidatesAllowed(model) {
			return nil, badParam("n", "'n' must be 1 for this model: %s returns one answer per request.", model)
		}
		plan.candidates = req.N
	}
	if req.Seed != nil {
		if n, err := jsonx.Int(req.Seed); err != nil || n < -1<<31 || n > 1<<31-1 {
			return nil, badParam("seed", "'seed' must be a 32-bit integer for this model.")
		}
	}
	plan.maxOutput = GeminiMaxOutputTokens(req.MaxTokens, plan.images)

	contents := false
	for i := range req.Messages {
		m := &req.Messages[i]
		for j := range m.Parts {
			pt := &m.Parts[j]
			if isSystemRole(m.Role) && pt.Image != nil {
				p := "messages[" + strconv.Itoa(i) + "].content[" + strconv.Itoa(j) + "]"
				return nil, badParam(p, "'%s': a %s message may only hold text.", p, m.Role)
			}
			if !isSystemRole(m.Role) && (pt.Image != nil || len(pt.Text) > 0) {
				contents = true
			}
		}
	}
	if !contents {
		return nil, badParam("messages", "'messages' must hold a user message with text or an image.")
	}
	return plan, nil
}

// appendGeminiBody writes the generateContent request for req, which
// planGemini accepted. Text is copied as the JSON-escaped content it already
// is; data-URL images are copied as the base64 they already are.
//
// system and developer messages become systemInstruction. Whether
// gemini-2.5-flash-image follows a system instruction is unproven (its
// predecessor refused one); it is sent as Google documents it.
//
// Consecutive messages of one role are merged into one content, since
// Google's turns alternate between user and model.
func appendGeminiBody(dst []byte, req *ChatRequest, plan *geminiPlan) []byte {
	return appendGeminiBodyRefs(dst, req, plan, nil)
}

// appendGeminiBodyRefs is appendGeminiBody that, when refs is not nil,
// references the client's large base64 images (splitBody) instead of
// copying them into dst.
func appendGeminiBodyRefs(dst []byte, req *ChatRequest, plan *geminiPlan, refs *[]bodyRef) []byte {
	// One allocation at most: the body is about the client's, plus the
	// fetched images in base64.
	n := len(dst) + len(req.Raw) + 512
	if refs != nil {
		n = len(dst) + 4096
	}
	for i := range req.Messages {
		for _, pt := range req.Messages[i].Parts {
			if pt.Image != nil && pt.Image.Data != nil {
				n += base64.StdEncoding.EncodedLen(len(pt.Image.Data)) + 64
			}
		}
	}
	if cap(dst) < n {
		dst = append(make([]byte, 0, n), dst...)
	}
	dst = append(dst, '{')
	w := partWriter{}
	for i := range req.Messages {
		m := &req.Messages[i]
		if !isSystemRole(m.Role) {
			continue
		}
		for _, pt := range m.Parts {
			if len(pt.Text) == 0 {
				continue
			}
			dst = w.begin(dst, `"systemInstruction":{"parts":[`, "")
			dst = appendTextPart(dst, pt.Text)
		}
	}
	if w.open {
		dst = append(dst, "]},"...)
	}

	dst = append(dst, `"contents":[`...)
	w = partWriter{}
	var segs []segment
	for i := range req.Messages {
		m := &req.Messages[i]
		if isSystemRole(m.Role) {
			continue
		}
		role := geminiRole(m.Role)
		for _, pt := range m.Parts {
			switch {
			case pt.Image != nil && pt.Image.B64 != nil:
				dst = w.begin(dst, "", role)
				dst = appendInlineData(dst, pt.Image.MIME, pt.Image.B64, refs)
				dst = appendSignature(dst, req, role, pt.Image.B64)
			case pt.Image != nil:
				// An http(s) image, fetched by Prepare.
				dst = w.begin(dst, "", role)
				dst = append(dst, `{"inlineData":{"mimeType":`...)
				dst = jsonx.AppendString(dst, pt.Image.MIME)
				dst = append(dst, `,"data":"`...)
				dst = base64.StdEncoding.AppendEncode(dst, pt.Image.Data)
				dst = append(dst, `"}}`...)
			case role == "model":
				// A previous answer sent back for multi-turn editing carries
				// its image as markdown: it goes back to Google as an image.
				segs, _ = scanMarkdown(pt.Text, true, false, segs[:0])
				for _, s := range segs {
					if s.image != nil {
						dst = w.begin(dst, "", role)
						dst = appendInlineData(dst, s.image.MIME, s.image.B64, refs)
						dst = appendSignature(dst, req, role, s.image.B64)
					} else if t := trimEscapedSpace(s.text); len(t) > 0 {
						dst = w.begin(dst, "", role)
						dst = appendTextPart(dst, t)
					}
				}
			case len(pt.Text) > 0:
				dst = w.begin(dst, "", role)
				dst = appendTextPart(dst, pt.Text)
			}
		}
	}
	if w.open {
		dst = append(dst, "]}"...)
	}
	dst = append(dst, `],"generationConfig":{"responseModalities":[`...)
	dst = append(dst, plan.modalities...)
	dst = append(dst, ']')
	if (req.AspectRatio != "" || req.ImageSize != "") && plan.images {
		dst = append(dst, `,"imageConfig":{`...)
		if req.AspectRatio != "" {
			dst = append(dst, `"aspectRatio":`...)
			dst = jsonx.AppendString(dst, req.AspectRatio)
		}
		if req.ImageSize != "" {
			if req.AspectRatio != "" {
				dst = append(dst, ',')
			}
			dst = append(dst, `"imageSize":`...)
			dst = jsonx.AppendString(dst, req.ImageSize)
		}
		dst = append(dst, '}')
	}
	if plan.candidates > 1 {
		dst = append(dst, `,"candidateCount":`...)
		dst = strconv.AppendInt(dst, int64(plan.candidates), 10)
	}
	if plan.maxOutput > 0 {
		dst = append(dst, `,"maxOutputTokens":`...)
		dst = strconv.AppendInt(dst, plan.maxOutput, 10)
	}
	dst = appendRawMember(dst, "temperature", req.Temperature)
	dst = appendRawMember(dst, "topP", req.TopP)
	if len(req.Stop) > 0 {
		dst = append(dst, `,"stopSequences":[`...)
		for i, s := range req.Stop {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, s...)
			dst = append(dst, '"')
		}
		dst = append(dst, ']')
	}
	dst = appendRawMember(dst, "seed", req.Seed)
	dst = appendRawMember(dst, "presencePenalty", plan.presence)
	dst = appendRawMember(dst, "frequencyPenalty", plan.frequency)
	return append(dst, "}}"...)
}

// partWriter opens contents (and their parts arrays) as parts arrive, so that
// empty messages leave no empty content, which Google refuses.
type partWriter struct {
	open     bool   // a parts array is open
	role     string // of the open content
	contents int    // contents written
}

// begin prepares dst for the next part of role. With a prefix (the system
// instruction) there is a single content and no role.
func (w *partWriter) begin(dst []byte, prefix, role string) []byte {
	if w.open && w.role == role {
		return append(dst, ',')
	}
	if w.open {
		dst = append(dst, "]}"...)
	}
	if prefix != "" {
		dst = append(dst, prefix...)
	} else {
		if w.contents > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"role":"`...)
		dst = append(dst, role...)
		dst = append(dst, `","parts":[`...)
	}
	w.open, w.role = true, role
	w.contents++
	return dst
}

func appendTextPart(dst, escaped []byte) []byte {
	dst = append(dst, `{"text":"`...)
	dst = append(dst, escaped...)
	return append(dst, `"}`...)
}

// appendInlineData writes an inlineData part; with refs, a large b64 is
// referenced at its place instead of copied.
func appendInlineData(dst []byte, mime string, b64 []byte, refs *[]bodyRef) []byte {
	dst = append(dst, `{"inlineData":{"mimeType":`...)
	dst = jsonx.AppendString(dst, mime)
	dst = append(dst, `,"data":"`...)
	dst = appendRef(dst, b64, refs)
	return append(dst, `"}}`...)
}

// appendRawMember writes ,"name":raw when raw (a JSON value) is set.
func appendRawMember(dst []byte, name string, raw []byte) []byte {
	if raw == nil {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return append(dst, raw...)
}

// appendSignature gives the part just written (an image of role, ending in
// '}') the thoughtSignature the model put on that image when it drew it,
// if one is known. Only the model's own turns carry signatures.
func appendSignature(dst []byte, req *ChatRequest, role string, b64 []byte) []byte {
	if role != "model" || len(req.ThoughtSignatures) == 0 {
		return dst
	}
	d, ok := ImageDigest(b64)
	if !ok {
		return dst
	}
	sig := req.ThoughtSignatures[d]
	if sig == nil {
		return dst
	}
	dst = append(dst[:len(dst)-1], `,"thoughtSignature":"`...)
	dst = append(dst, sig...)
	return append(dst, `"}`...)
}

// digestChunk is the base64 decoded per step: a multiple of 4 characters.
const digestChunk = 4 << 14

var digestBufs = sync.Pool{New: func() any { b := make([]byte, digestChunk/4*3); return &b }}

// ImageDigest returns the SHA-256 of the bytes b64 (padded standard base64)
// encodes, which names an image whatever form it travelled in: a data URL,
// markdown, or a link whose stored bytes are the decoded image. ok is false
// when b64 is not valid base64.
func ImageDigest(b64 []byte) (d [32]byte, ok bool) {
	if len(b64)%4 != 0 {
		return d, false
	}
	bp := digestBufs.Get().(*[]byte)
	defer digestBufs.Put(bp)
	h := sha256.New()
	for len(b64) > 0 {
		n := min(len(b64), digestChunk)
		m, err := base64.StdEncoding.Decode(*bp, b64[:n])
		if err != nil {
			return d, false
		}
		h.Write((*bp)[:m])
		b64 = b64[n:]
	}
	h.Sum(d[:0])
	return d, true
}

// ModelImages calls fn with the base64 of each image in req's assistant
// messages that a Gemini request sends back as the model's own: image parts
// holding data, and data-URL images written as markdown in their text. These
// are the images whose thought signatures are worth finding.
func ModelImages(req *ChatRequest, fn func(b64 []byte)) {
	var segs []segment
	for i := range req.Messages {
		m := &req.Messages[i]
		if m.Role != "assistant" {
			continue
		}
		for _, pt := range m.Parts {
			switch {
			case pt.Image != nil && pt.Image.B64 != nil:
				fn(pt.Image.B64)
			case pt.Image == nil && len(pt.Text) > 0:
				segs, _ = scanMarkdown(pt.Text, true, false, segs[:0])
				for _, s := range segs {
					if s.image != nil {
						fn(s.image.B64)
					}
				}
			}
		}
	}
}
