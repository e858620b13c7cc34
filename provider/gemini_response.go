package provider

import (
	"bytes"
	"time"

	"nanogate/internal/jsonx"
)

// Reading Google's answers.
//
// An image answer is one JSON document around a base64 string of megabytes,
// five levels down (candidates[].content.parts[].inlineData.data). Walking it
// with jsonx.ObjectEach level by level would validate that string once per
// level. Instead the document is validated once with jsonx.Valid and then
// walked with vMembers and vElems, which trust that validation and find the
// end of each string with bytes.IndexByte: tens of GB/s, so descending five
// levels costs less than the one validation.

// vString returns the index just past the string literal that starts at
// d[i] (d[i] is '"'), or len(d) if it is not closed.
func vString(d []byte, i int) int {
	i++
	for {
		k := bytes.IndexByte(d[i:], '"')
		if k < 0 {
			return len(d)
		}
		j := i + k
		// The quote is escaped when an odd run of backslashes precedes it.
		// The run cannot reach back past i: d[i-1] is a quote.
		bs := 0
		for p := j - 1; p >= i && d[p] == '\\'; p-- {
			bs++
		}
		if bs%2 == 0 {
			return j + 1
		}
		i = j + 1
	}
}

// vSkip returns the index just past the value at or after d[i]. On a
// document that jsonx.Valid accepted it is exact; on anything else it still
// ends, without panicking, somewhere up to len(d).
func vSkip(d []byte, i int) int {
	i = jsonx.SkipWS(d, i)
	if i >= len(d) {
		return len(d)
	}
	switch d[i] {
	case '"':
		return vString(d, i)
	case '{', '[':
		depth := 0
		for i < len(d) {
			switch d[i] {
			case '"':
				i = vString(d, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(d)
	}
	for i < len(d) {
		switch d[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// vMembers calls fn with the raw key (between its quotes) and the value span
// of each member of the object obj, which must come from a validated
// document. Keys are compared raw: Google's keys have no escapes.
func vMembers(obj []byte, fn func(key, value []byte)) {
	i := jsonx.SkipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	i++
	for {
		i = jsonx.SkipWS(obj, i)
		if i < len(obj) && obj[i] == ',' {
			i = jsonx.SkipWS(obj, i+1)
		}
		if i >= len(obj) || obj[i] != '"' {
			return
		}
		ke := vString(obj, i)
		if ke-1 <= i {
			return
		}
		key := obj[i+1 : ke-1]
		i = jsonx.SkipWS(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		vs := jsonx.SkipWS(obj, i+1)
		ve := vSkip(obj, vs)
		if ve <= vs {
			return
		}
		fn(key, obj[vs:ve:ve])
		i = ve
	}
}

// vElems calls fn with the span of each element of the array arr, which
// must come from a validated document.
func vElems(arr []byte, fn func(value []byte)) {
	i := jsonx.SkipWS(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return
	}
	i++
	for {
		i = jsonx.SkipWS(arr, i)
		if i < len(arr) && arr[i] == ',' {
			i = jsonx.SkipWS(arr, i+1)
		}
		if i >= len(arr) || arr[i] == ']' {
			return
		}
		ve := vSkip(arr, i)
		if ve <= i {
			return
		}
		fn(arr[i:ve:ve])
		i = ve
	}
}

// vString content: the JSON-escaped content of a string value, or nil.
func vText(v []byte) []byte {
	if len(v) < 2 || v[0] != '"' {
		return nil
	}
	return v[1 : len(v)-1 : len(v)-1]
}

func vInt(v []byte) int64 {
	n, _ := jsonx.Int(v)
	return n
}

// googleEnums are the enum values Google sends, so that reading one does not
// allocate a string.
var googleEnums = []string{
	"STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT",
	"SPII", "MALFORMED_FUNCTION_CALL", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
	"IMAGE_OTHER", "NO_IMAGE", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "FINISH_REASON_UNSPECIFIED",
	"BLOCK_REASON_UNSPECIFIED", "IMAGE", "TEXT",
	"image/png", "image/jpeg", "image/webp", "image/gif", "image/heic", "image/heif",
}

// vEnum returns a string value, shared when it is a known enum value.
func vEnum(v []byte) string {
	raw := vText(v)
	if raw == nil {
		return ""
	}
	for _, e := range googleEnums {
		if string(raw) == e {
			return e
		}
	}
	s, _ := jsonx.Unquote(v)
	return s
}

// geminiPart is one part of a candidate's content.
type geminiPart struct {
	text  []byte // JSON-escaped, nil if none
	image Image
	isImg bool
}

// readPart reads a part. Thought parts (thinking models send drafts, even
// draft images, marked "thought": true) and parts that are neither text nor
// an image are skipped: ok is false.
func readPart(p []byte) (part geminiPart, ok bool, bad bool) {
	thought := false
	vMembers(p, func(k, v []byte) {
		switch string(k) {
		case "text":
			part.text = vText(v)
		case "thought":
			thought = string(v) == "true"
		case "thoughtSignature":
			part.image.Signature = readSignature(v)
		case "inlineData":
			vMembers(v, func(k, v []byte) {
				switch string(k) {
				case "mimeType":
					part.image.MIME = vEnum(v)
				case "data":
					part.image.B64 = vText(v)
					part.isImg = part.image.B64 != nil
				}
			})
		}
	})
	if thought {
		return part, false, false
	}
	if part.isImg {
		if len(part.image.MIME) < 7 || part.image.MIME[:6] != "image/" {
			return part, false, false
		}
		if bytes.IndexByte(part.image.B64, '\\') >= 0 {
			part.image.B64 = bytes.ReplaceAll(part.image.B64, []byte(`\/`), []byte("/"))
		}
		if !ValidBase64(part.image.B64) {
			return part, false, true
		}
		mime, why, _ := checkOutputImage(part.image.MIME, part.image.B64, true)
		if why != "" {
			return part, false, true
		}
		part.image.MIME = mime
		part.text = nil
		return part, true, false
	}
	part.image.Signature = nil
	return part, part.text != nil, false
}

// maxThoughtSignature bounds a signature kept from an answer; Google's are
// a few KiB of base64 at most.
const maxThoughtSignature = 64 << 10

// readSignature returns a thoughtSignature value as the base64 it holds, or
// nil when it is not one: a signature that cannot be sent back as it is is
// dropped, never a reason to fail the answer.
func readSignature(v []byte) []byte {
	sig := vText(v)
	if len(sig) > maxThoughtSignature {
		return nil
	}
	if bytes.IndexByte(sig, '\\') >= 0 {
		sig = bytes.ReplaceAll(sig, []byte(`\/`), []byte("/"))
	}
	if len(sig) == 0 {
		return nil
	}
	// Only the alphabet is checked, not the length: the signature is
	// opaque and goes back exactly as it came, and the check is what makes
	// writing it raw into the next request safe.
	for _, c := range sig {
		if !b64Alphabet[c] && c != '=' && c != '-' && c != '_' {
			return nil
		}
	}
	return sig
}

// geminiCandidate is what the gateway reads of one candidate.
type geminiCandidate struct {
	index     int
	parts     []byte // content.parts
	finish    string // Google's finishReason
	finishMsg []byte // JSON-escaped finishMessage
}

func readCandidate(c []byte, pos int) geminiCandidate {
	gc := geminiCandidate{index: pos}
	vMembers(c, func(k, v []byte) {
		switch string(k) {
		case "index":
			if n, err := jsonx.Int(v); err == nil {
				gc.index = int(min(max(n, -1), MaxN))
			}
		case "content":
			vMembers(v, func(k, v []byte) {
				if string(k) == "parts" {
					gc.parts = v
				}
			})
		case "finishReason":
			gc.finish = vEnum(v)
		case "finishMessage":
			gc.finishMsg = vText(v)
		}
	})
	return gc
}

// geminiFinish maps Google's finishReason to OpenAI's words. A reason of no
// answer at all (NO_IMAGE and the IMAGE_* ones, the safety filters) is
// content_filter, as is any unknown reason that left no image.
func geminiFinish(reason string, hasImage bool) string {
	switch reason {
	case "STOP", "":
		return "stop"
	case "MAX_TOKENS":
		return "length"
	case "SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "LANGUAGE",
		"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE":
		return "content_filter"
	}
	if hasImage {
		return "stop"
	}
	return "content_filter"
}

// needsNotice reports whether a choice that ended for reason gets an
// explanation in its text: it made no image, and either it was stopped for
// a reason or it said nothing at all. A plain text answer (STOP) is left as
// the model wrote it, and so is any text answer to a request that asked for
// text only (modalities ["text"]): no image was missing.
func needsNotice(reason string, hasImage, hasText, wantImages bool) bool {
	if hasImage {
		return false
	}
	if !wantImages {
		return !hasText
	}
	return !(reason == "STOP" || reason == "") || !hasText
}

// noticeFor is the notice's wording: a text-only request missed no image.
func noticeFor(wantImages bool) string {
	if wantImages {
		return noImageNotice
	}
	return noAnswerNotice
}

// appendNotice writes `The model returned no image (REASON).` and Google's
// message, JSON-escaped, after a blank line when sep says text precedes it.
func appendNotice(dst []byte, sep bool, what, reason string, msg []byte) []byte {
	if sep {
		dst = append(dst, `\n\n`...)
	}
	dst = append(dst, what...)
	if reason == "" {
		reason = "STOP"
	}
	dst = append(dst, " ("...)
	start := len(dst)
	dst = jsonx.AppendString(dst, reason)
	// Keep the escaped content, not the quotes.
	copy(dst[start:], dst[start+1:len(dst)-1])
	dst = dst[:len(dst)-2]
	dst = append(dst, ")."...)
	if len(msg) > 0 {
		dst = append(dst, ' ')
		dst = append(dst, msg...)
	}
	return dst
}

const (
	noImageNotice  = "The model returned no image"
	noAnswerNotice = "The model returned no answer"
	blockedNotice  = "The prompt was blocked"
)

// geminiUsage is usageMetadata. In a stream each event carries the running
// totals: the last one counts.
type geminiUsage struct {
	prompt, candidates, thoughts int64
	image                        int64 // the IMAGE entry of candidatesTokensDetails
	imageListed                  bool
	promptImage                  int64 // the IMAGE entry of promptTokensDetails
}

func readGeminiUsage(u []byte) geminiUsage {
	var g geminiUsage
	vMembers(u, func(k, v []byte) {
		switch string(k) {
		case "promptTokenCount":
			g.prompt = vInt(v)
		case "candidatesTokenCount":
			g.candidates = vInt(v)
		case "thoughtsTokenCount":
			g.thoughts = vInt(v)
		case "promptTokensDetails":
			g.promptImage, _ = modalityCount(v, "IMAGE")
		case "candidatesTokensDetails":
			g.image, g.imageListed = modalityCount(v, "IMAGE")
		}
	})
	return g
}

// modalityCount sums the entries of modality in a list of
// {"modality","tokenCount"}; listed is false when there is none.
func modalityCount(list []byte, modality string) (n int64, listed bool) {
	vElems(list, func(d []byte) {
		var m string
		var c int64
		vMembers(d, func(k, v []byte) {
			switch string(k) {
			case "modality":
				m = vEnum(v)
			case "tokenCount":
				c = vInt(v)
			}
		})
		if m == modality {
			n += c
			listed = true
		}
	})
	return n, listed
}

// neutral splits the upstream count: candidatesTokenCount holds text and
// image tokens while the details list only IMAGE, so text is the
// difference. Without an IMAGE entry the gateway's own rate per image stands
// in. Thinking tokens (Gemini 3 image models) are billed by Google as output
// text and are counted as such; gemini-2.5-flash-image reports none.
func (g geminiUsage) neutral(images int, perImage int64) Usage {
	img := g.image
	if !g.imageListed {
		img = int64(images) * perImage
	}
	return Usage{Reported: true, PromptTokens: g.prompt, TextTokens: max(g.candidates-img, 0) + g.thoughts,
		PromptImageTokens: g.promptImage, ImageTokens: g.image, ImageTokensListed: g.imageListed}
}

// geminiAnswer holds the top-level members of one generateContent answer
// (or one stream event).
type geminiAnswer struct {
	candidates  []byte
	usage       []byte
	blockReason string
	blockMsg    []byte
	responseID  []byte
	err         []byte
}

func readAnswer(body []byte) geminiAnswer {
	var a geminiAnswer
	vMembers(body, func(k, v []byte) {
		switch string(k) {
		case "candidates":
			a.candidates = v
		case "usageMetadata":
			a.usage = v
		case "promptFeedback":
			vMembers(v, func(k, v []byte) {
				switch string(k) {
				case "blockReason":
					a.blockReason = vEnum(v)
				case "blockReasonMessage":
					a.blockMsg = vText(v)
				}
			})
		case "responseId":
			a.responseID = v
		case "error":
			a.err = v
		}
	})
	return a
}

// parseResult reads a generateContent answer without decoding its images.
func (p *Gemini) parseResult(body []byte) (*Result, error) { return p.parseAnswer(body, true) }

// parseTextResult is parseResult for a request that asked for text only.
func (p *Gemini) parseTextResult(body []byte) (*Result, error) { return p.parseAnswer(body, false) }

// parseAnswer reads a generateContent answer to a request that asked for
// images or not (wantImages).
func (p *Gemini) parseAnswer(body []byte, wantImages bool) (*Result, error) {
	if jsonx.KindOf(body) != jsonx.Object || !jsonx.Valid(body) {
		return nil, p.invalid("upstream answer is not JSON")
	}
	a := readAnswer(body)
	if a.err != nil {
		return nil, p.invalid("upstream answered 200 with an error")
	}
	res := &Result{Created: time.Now().Unix()}
	if jsonx.KindOf(a.responseID) == jsonx.String {
		res.ID, _ = jsonx.Unquote(a.responseID)
	}
	var err error
	pos := 0
	vElems(a.candidates, func(c []byte) {
		if err != nil {
			return
		}
		var ch Choice
		ch, err = p.readChoice(readCandidate(c, pos), wantImages)
		res.Choices = append(res.Choices, ch)
		pos++
	})
	if err != nil {
		return nil, err
	}
	if len(res.Choices) == 0 {
		if a.blockReason == "" {
			return nil, p.invalid("upstream answer has no candidates")
		}
		// A blocked prompt is an answer, not a failure: another provider
		// would block it too, and nothing is billed but the prompt.
		res.Choices = []Choice{{
			Text:         appendNotice(nil, false, blockedNotice, a.blockReason, a.blockMsg),
			FinishReason: "content_filter",
		}}
	}
	if a.usage != nil {
		res.Usage = readGeminiUsage(a.usage).neutral(res.Images(), p.opts.TokensPerImage)
	}
	return res, nil
}

// readChoice turns a candidate into a choice: its text parts joined, its
// images in order, and, when it made no image, the reason in the text.
func (p *Gemini) readChoice(gc geminiCandidate, wantImages bool) (Choice, error) {
	ch := Choice{Index: gc.index}
	if gc.index < 0 || gc.index >= MaxN {
		return ch, p.invalid("upstream candidate index out of range")
	}
	var text []byte
	owned := false // text is a buffer of ours, not a span of the body
	imageSince := false
	bad := false
	vElems(gc.parts, func(v []byte) {
		part, ok, isBad := readPart(v)
		bad = bad || isBad
		if !ok {
			return
		}
		if part.isImg {
			ch.addImage(part.image)
			imageSince = len(text) > 0
			return
		}
		if len(part.text) == 0 {
			return
		}
		ch.addText(part.text)
		if text == nil {
			text = part.text
			return
		}
		if !owned {
			text = append(make([]byte, 0, len(text)+len(part.text)+64), text...)
			owned = true
		}
		if imageSince {
			// Text on both sides of an image: two paragraphs.
			text = append(text, `\n\n`...)
			imageSince = false
		}
		text = append(text, part.text...)
	})
	if bad {
		return ch, p.invalid("upstream image is not valid base64")
	}
	hasImage := len(ch.Images) > 0
	if needsNotice(gc.finish, hasImage, len(text) > 0, wantImages) {
		if !owned {
			text = append(make([]byte, 0, len(text)+96+len(gc.finishMsg)), text...)
		}
		text = appendNotice(text, len(text) > 0, noticeFor(wantImages), gc.finish, gc.finishMsg)
	}
	ch.Text = text
	ch.settlePieces()
	ch.FinishReason = geminiFinish(gc.finish, hasImage)
	return ch, nil
}
