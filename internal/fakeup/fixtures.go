package fakeup

import (
	"bytes"
	"embed"
	"encoding/json"
	"path"
)

// The fixtures are the recorded (or faithfully rebuilt) upstream answers. Serving them verbatim, rather than
// retyping them, keeps the fake honest: a parser that passes here has seen the real bytes.
//
//go:embed fixtures
var fixtureFS embed.FS

// Fixture returns a copy of the file fixtures/name (for example "gemini/response_image.json" or "tiny.png"), the
// bytes this package serves. It panics if there is no such file, which is a bug in the calling test.
func Fixture(name string) []byte {
	b, err := fixtureFS.ReadFile(path.Join("fixtures", name))
	if err != nil {
		panic("fakeup: no fixture " + name)
	}
	return b
}

// fx holds the fixtures the servers answer with, read once.
var fx = struct {
	tiny []byte

	oaBadJSON, oaBadKey, oaQuota403, oaRate429, oaNoCredit429, oa500, oaModels []byte

	gBadArg, gBadKey, gNoKey, gNotFound, gQuota429, gPrepay429, g500, g503 []byte
	gTextOnly, gNoImage, gImageSafety, gPromptBlocked                      []byte
}{
	tiny: Fixture("tiny.png"),

	oaBadJSON:     Fixture("openai/error_400_invalid_request.json"),
	oaBadKey:      Fixture("openai/error_401_invalid_api_key.json"),
	oaQuota403:    Fixture("openai/error_403_reseller_quota.json"),
	oaRate429:     Fixture("openai/error_429_rate_limit.json"),
	oaNoCredit429: Fixture("openai/error_429_insufficient_quota.json"),
	oa500:         Fixture("openai/error_500.json"),
	oaModels:      Fixture("openai/response_models.json"),

	gBadArg:    Fixture("gemini/error_400_invalid_argument.json"),
	gBadKey:    Fixture("gemini/error_400_api_key_invalid.json"),
	gNoKey:     Fixture("gemini/error_403_permission_denied.json"),
	gNotFound:  Fixture("gemini/error_404_model_not_found.json"),
	gQuota429:  Fixture("gemini/error_429_resource_exhausted.json"),
	gPrepay429: Fixture("gemini/error_429_prepay_depleted.json"),
	g500:       Fixture("gemini/error_500_internal.json"),
	g503:       Fixture("gemini/error_503_unavailable.json"),

	gTextOnly:      Fixture("gemini/response_text_only.json"),
	gNoImage:       Fixture("gemini/response_no_image.json"),
	gImageSafety:   Fixture("gemini/response_image_safety.json"),
	gPromptBlocked: Fixture("gemini/response_prompt_blocked.json"),
}

// fixtureModel is the model name the 404 fixture mentions; it is replaced by the model asked for.
const fixtureModel = "gemini-2.5-flash-image-preview"

// marshal encodes v compactly without HTML escaping, so model names and text come out as sent.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("fakeup: " + err.Error()) // only our own plain structs are encoded here
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// indent lays compact JSON out the way each upstream's bodies are recorded: prefix-free, with the given
// indent and a final newline.
func indent(compact []byte, in string) []byte {
	var b bytes.Buffer
	if err := json.Indent(&b, compact, "", in); err != nil {
		panic("fakeup: " + err.Error())
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// googleLine lays compact JSON out on one line the way Google's SSE events are recorded: a space after each
// colon, none after commas.
func googleLine(compact []byte) []byte {
	out := make([]byte, 0, len(compact)+len(compact)/8)
	inStr, esc := false, false
	for _, c := range compact {
		out = append(out, c)
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case inStr && c == '"':
			inStr = false
		case inStr:
		case c == '"':
			inStr = true
		case c == ':':
			out = append(out, ' ')
		}
	}
	return out
}

// compact removes the layout of a JSON document.
func compact(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		panic("fakeup: " + err.Error())
	}
	return out.Bytes()
}

// jsonString returns s as the inside of a JSON string literal (escaped, without the quotes).
func jsonString(s string) []byte {
	b := marshal(s)
	return b[1 : len(b)-1]
}
