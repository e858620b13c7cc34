package fakeup

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// GeminiRequest is a generateContent request body with both spellings (camelCase and the proto field names in
// snake_case) folded into one, for tests that check what the gateway sent.
type GeminiRequest struct {
	SystemInstruction  *GeminiContent
	Contents           []GeminiContent
	ResponseModalities []string
	AspectRatio        string // generationConfig.imageConfig.aspectRatio
	ImageSize          string // generationConfig.imageConfig.imageSize
	SnakeCase          bool   // some field was spelled in snake_case
}

// GeminiContent is one content (a turn, or the system instruction).
type GeminiContent struct {
	Role  string
	Parts []GeminiPart
}

// GeminiPart is one part: text, or inline data decoded from base64, with the thoughtSignature sent on it (as
// sent: base64).
type GeminiPart struct {
	Text             string
	MimeType         string
	Data             []byte
	ThoughtSignature string
}

// Wire shapes of a request, both spellings side by side. encoding/json folds case but not underscores, so
// each snake_case name needs its own field.
type wireRequest struct {
	Contents               []wireContent  `json:"contents"`
	SystemInstruction      *wireContent   `json:"systemInstruction"`
	SystemInstructionSnake *wireContent   `json:"system_instruction"`
	GenerationConfig       *wireGenConfig `json:"generationConfig"`
	GenerationConfigSnake  *wireGenConfig `json:"generation_config"`
}

type wireContent struct {
	Role  string     `json:"role"`
	Parts []wirePart `json:"parts"`
}

// wirePart lists the members of Part's "data" oneof, so that a part holding none (an OpenAI image_url part
// forwarded as is, say) or two can be refused as Google does.
type wirePart struct {
	Text                     *string   `json:"text"`
	InlineData               *wireBlob `json:"inlineData"`
	InlineDataSnake          *wireBlob `json:"inline_data"`
	FileData                 present   `json:"fileData"`
	FileDataSnake            present   `json:"file_data"`
	FunctionCall             present   `json:"functionCall"`
	FunctionCallSnake        present   `json:"function_call"`
	FunctionResponse         present   `json:"functionResponse"`
	FunctionResponseSnake    present   `json:"function_response"`
	ExecutableCode           present   `json:"executableCode"`
	ExecutableCodeSnake      present   `json:"executable_code"`
	CodeExecutionResult      present   `json:"codeExecutionResult"`
	CodeExecutionResultSnake present   `json:"code_execution_result"`
	// Not a member of the oneof: the model's context, sent back on its own parts.
	ThoughtSignature      *string `json:"thoughtSignature"`
	ThoughtSignatureSnake *string `json:"thought_signature"`
}

func (p *wirePart) signature() *string {
	if p.ThoughtSignature != nil {
		return p.ThoughtSignature
	}
	return p.ThoughtSignatureSnake
}

type wireBlob struct {
	MimeType      string `json:"mimeType"`
	MimeTypeSnake string `json:"mime_type"`
	Data          rawRef `json:"data"`
}

type wireGenConfig struct {
	ResponseModalities      []string         `json:"responseModalities"`
	ResponseModalitiesSnake []string         `json:"response_modalities"`
	ImageConfig             *wireImageConfig `json:"imageConfig"`
	ImageConfigSnake        *wireImageConfig `json:"image_config"`
}

type wireImageConfig struct {
	AspectRatio      string `json:"aspectRatio"`
	AspectRatioSnake string `json:"aspect_ratio"`
	ImageSize        string `json:"imageSize"`
	ImageSizeSnake   string `json:"image_size"`
}

// rawRef keeps the raw JSON of a value without copying it: encoding/json hands UnmarshalJSON a slice of the
// input, so a megabyte of base64 is checked in place. Valid only while the input is.
type rawRef []byte

func (r *rawRef) UnmarshalJSON(b []byte) error {
	*r = b
	return nil
}

func (p *wirePart) members() []string {
	var m []string
	add := func(set bool, name string) {
		if set {
			m = append(m, name)
		}
	}
	add(p.Text != nil, "text")
	add(p.InlineData != nil || p.InlineDataSnake != nil, "inline_data")
	add(bool(p.FileData || p.FileDataSnake), "file_data")
	add(bool(p.FunctionCall || p.FunctionCallSnake), "function_call")
	add(bool(p.FunctionResponse || p.FunctionResponseSnake), "function_response")
	add(bool(p.ExecutableCode || p.ExecutableCodeSnake), "executable_code")
	add(bool(p.CodeExecutionResult || p.CodeExecutionResultSnake), "code_execution_result")
	return m
}

func (p *wirePart) blob() *wireBlob {
	if p.InlineData != nil {
		return p.InlineData
	}
	return p.InlineDataSnake
}

// checkGeminiBody refuses what Google refuses with a 400 and a gateway could plausibly send: a body that is not
// a request, no contents, empty or ambiguous parts, inline data that is not base64 (a data: URL left in) or not
// an image (base64 applied twice). It returns Google's message and the field, or "" when the body passes.
func checkGeminiBody(body []byte) (msg, field string) {
	var req wireRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return "Invalid JSON payload received. " + jsonProblem(err), ""
	}
	if len(req.Contents) == 0 {
		return "* GenerateContentRequest.contents: contents is not specified\n", "contents"
	}
	for i := range req.Contents {
		c := &req.Contents[i]
		if len(c.Parts) == 0 {
			f := fmt.Sprintf("contents[%d].parts", i)
			return "* GenerateContentRequest." + f + ": contents.parts must not be empty.\n", f
		}
		for j := range c.Parts {
			if msg, field := checkPart(&c.Parts[j], fmt.Sprintf("contents[%d].parts[%d]", i, j)); msg != "" {
				return msg, field
			}
		}
	}
	sys := req.SystemInstruction
	if sys == nil {
		sys = req.SystemInstructionSnake
	}
	if sys != nil {
		for j := range sys.Parts {
			if msg, field := checkPart(&sys.Parts[j], fmt.Sprintf("system_instruction.parts[%d]", j)); msg != "" {
				return msg, field
			}
		}
	}
	return "", ""
}

func checkPart(p *wirePart, at string) (msg, field string) {
	switch m := p.members(); {
	case len(m) == 0:
		return "* GenerateContentRequest." + at + ".data: required oneof field 'data' must have one initialized field\n", at + ".data"
	case len(m) > 1:
		return fmt.Sprintf("Invalid value at '%s' (oneof), oneof field 'data' is already set. Cannot set '%s'", at, m[1]), at
	}
	if sig := p.signature(); sig != nil && !base64Chars(*sig) {
		// Only the alphabet is checked: the fixtures' made-up signature is not padded to a whole quantum.
		f := at + ".thought_signature"
		return fmt.Sprintf("Invalid value at '%s' (TYPE_BYTES), Base64 decoding failed for %q", f, clip([]byte(*sig))), f
	}
	b := p.blob()
	if b == nil {
		return "", ""
	}
	data, ok := jsonBytesField(b.Data)
	if !ok {
		f := at + ".inline_data.data"
		return fmt.Sprintf("Invalid value at '%s' (TYPE_BYTES), Base64 decoding failed for %q", f, clip(b.Data)), f
	}
	mime := b.MimeType
	if mime == "" {
		mime = b.MimeTypeSnake
	}
	if strings.HasPrefix(strings.ToLower(mime), "image/") && !looksLikeImage(data) {
		return "Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", ""
	}
	return "", ""
}

// base64Chars reports whether s is non-empty and made of base64 characters (either alphabet, with padding).
func base64Chars(s string) bool {
	for _, c := range []byte(s) {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_' || c == '=') {
			return false
		}
	}
	return s != ""
}

// jsonBytesField checks that raw is a JSON string holding base64 (standard or URL alphabet, padded or not, as
// proto3 JSON accepts) and returns its characters.
func jsonBytesField(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	data := raw[1 : len(raw)-1]
	if bytes.IndexByte(data, '\\') >= 0 { // escaped, e.g. "\/" from PHP: unquote (rare, so it may copy)
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		data = []byte(s)
	}
	n := len(bytes.TrimRight(data, "="))
	if len(data)-n > 2 || n%4 == 1 {
		return nil, false
	}
	for _, c := range data[:n] {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_') {
			return nil, false
		}
	}
	return data, true
}

// looksLikeImage decodes the first 12 bytes of base64 data and looks for a known image signature.
func looksLikeImage(b64 []byte) bool {
	if len(b64) < 16 {
		return false
	}
	head := make([]byte, 12)
	s := strings.NewReplacer("-", "+", "_", "/").Replace(string(b64[:16]))
	if _, err := base64.StdEncoding.Decode(head, []byte(s)); err != nil {
		return false
	}
	switch {
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")),
		bytes.HasPrefix(head, []byte("\xff\xd8\xff")),
		bytes.HasPrefix(head, []byte("GIF8")),
		bytes.HasPrefix(head, []byte("RIFF")) && string(head[8:12]) == "WEBP",
		string(head[4:8]) == "ftyp": // HEIC, HEIF, AVIF
		return true
	}
	return false
}

func jsonProblem(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("Unexpected token at offset %d.", syn.Offset)
	}
	return err.Error()
}

func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// ParseGeminiRequest decodes a generateContent request body (for example LastBody of a Gemini server) in either
// spelling, base64-decoding inline data. It fails where the server would answer 400.
func ParseGeminiRequest(body []byte) (*GeminiRequest, error) {
	if msg, _ := checkGeminiBody(body); msg != "" {
		return nil, errors.New("fakeup: " + strings.TrimSpace(msg))
	}
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, err
	}
	out := &GeminiRequest{}
	pick := func(camel, snake *wireContent) *wireContent {
		if camel == nil && snake != nil {
			out.SnakeCase = true
			return snake
		}
		return camel
	}
	conv := func(c *wireContent) (GeminiContent, error) {
		gc := GeminiContent{Role: c.Role}
		for _, p := range c.Parts {
			var gp GeminiPart
			if p.Text != nil {
				gp.Text = *p.Text
			}
			if sig := p.signature(); sig != nil {
				gp.ThoughtSignature = *sig
				out.SnakeCase = out.SnakeCase || p.ThoughtSignature == nil
			}
			if p.InlineDataSnake != nil {
				out.SnakeCase = true
			}
			if b := p.blob(); b != nil {
				gp.MimeType = b.MimeType
				if gp.MimeType == "" && b.MimeTypeSnake != "" {
					gp.MimeType, out.SnakeCase = b.MimeTypeSnake, true
				}
				data, _ := jsonBytesField(b.Data)
				dec, err := decodeBase64(data)
				if err != nil {
					return gc, err
				}
				gp.Data = dec
			}
			gc.Parts = append(gc.Parts, gp)
		}
		return gc, nil
	}
	if sys := pick(w.SystemInstruction, w.SystemInstructionSnake); sys != nil {
		c, err := conv(sys)
		if err != nil {
			return nil, err
		}
		out.SystemInstruction = &c
	}
	for i := range w.Contents {
		c, err := conv(&w.Contents[i])
		if err != nil {
			return nil, err
		}
		out.Contents = append(out.Contents, c)
	}
	gc := w.GenerationConfig
	if gc == nil && w.GenerationConfigSnake != nil {
		gc, out.SnakeCase = w.GenerationConfigSnake, true
	}
	if gc != nil {
		out.ResponseModalities = gc.ResponseModalities
		if out.ResponseModalities == nil && gc.ResponseModalitiesSnake != nil {
			out.ResponseModalities, out.SnakeCase = gc.ResponseModalitiesSnake, true
		}
		ic := gc.ImageConfig
		if ic == nil && gc.ImageConfigSnake != nil {
			ic, out.SnakeCase = gc.ImageConfigSnake, true
		}
		if ic != nil {
			out.AspectRatio, out.ImageSize = ic.AspectRatio, ic.ImageSize
			if ic.AspectRatioSnake != "" || ic.ImageSizeSnake != "" {
				out.SnakeCase = true
			}
			if out.AspectRatio == "" {
				out.AspectRatio = ic.AspectRatioSnake
			}
			if out.ImageSize == "" {
				out.ImageSize = ic.ImageSizeSnake
			}
		}
	}
	return out, nil
}

func decodeBase64(s []byte) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(string(s)); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("fakeup: inline data is not base64")
}
