package provider

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/jsonx"
)

// renderResult writes a Result as JSON for golden files. Text is JSON-escaped
// content already, so it goes between quotes as it is: the golden file then
// also proves that it is valid string content.
func renderResult(t *testing.T, res *Result) []byte {
	t.Helper()
	var b []byte
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, res.ID)
	b = append(b, `,"choices":[`...)
	for i, c := range res.Choices {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(c.Index), 10)
		b = append(b, `,"text":"`...)
		b = append(b, c.Text...)
		b = append(b, `","images":[`...)
		for j, img := range c.Images {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"mime":`...)
			b = jsonx.AppendString(b, img.MIME)
			b = append(b, `,"b64":"`...)
			b = append(b, img.B64...)
			b = append(b, `"}`...)
		}
		b = append(b, `],"finish_reason":`...)
		b = jsonx.AppendString(b, c.FinishReason)
		b = append(b, '}')
	}
	b = append(b, `],"usage":{"reported":`...)
	b = strconv.AppendBool(b, res.Usage.Reported)
	b = append(b, `,"prompt_tokens":`...)
	b = strconv.AppendInt(b, res.Usage.PromptTokens, 10)
	b = append(b, `,"text_tokens":`...)
	b = strconv.AppendInt(b, res.Usage.TextTokens, 10)
	b = append(b, `},"images":`...)
	b = strconv.AppendInt(b, int64(res.Images()), 10)
	b = append(b, '}')
	return indentJSON(t, b)
}

// responseInputs are Google's fixtures and the extra answers of testdata.
func responseInputs(t *testing.T) map[string][]byte {
	t.Helper()
	in := map[string][]byte{}
	for _, name := range []string{"response_image", "response_two_images", "response_text_only", "response_no_image",
		"response_image_safety", "response_prompt_blocked"} {
		in[name] = fakeup.Fixture("gemini/" + name + ".json")
	}
	files, _ := filepath.Glob("testdata/gemini/response/response_*.json")
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.json") {
			continue
		}
		in[strings.TrimSuffix(filepath.Base(f), ".json")] = readFile(t, f)
	}
	return in
}

func TestGeminiResponseGolden(t *testing.T) {
	p := testGemini(t, "", nil)
	inputs := responseInputs(t)
	if len(inputs) < 10 {
		t.Fatalf("found %d response cases", len(inputs))
	}
	for name, body := range inputs {
		t.Run(name, func(t *testing.T) {
			res, err := p.parseResult(body)
			if err != nil {
				t.Fatal(err)
			}
			if res.Created < time.Now().Add(-time.Minute).Unix() {
				t.Errorf("Created = %d", res.Created)
			}
			golden(t, "testdata/gemini/response/"+name+".golden.json", renderResult(t, res))
		})
	}
}

// TestGeminiResponseNoImageIsAnAnswer pins the README's no-image rule on the fixtures: a
// 200 without an image is content_filter with the reason in the text, and no
// image to bill.
func TestGeminiResponseNoImageIsAnAnswer(t *testing.T) {
	p := testGemini(t, "", nil)
	tests := []struct{ fixture, text string }{
		{"response_no_image", "The model returned no image (NO_IMAGE)."},
		{"response_image_safety", "The model returned no image (IMAGE_SAFETY)."},
		{"response_prompt_blocked", "The prompt was blocked (PROHIBITED_CONTENT)."},
	}
	for _, tt := range tests {
		res, err := p.parseResult(fakeup.Fixture("gemini/" + tt.fixture + ".json"))
		if err != nil {
			t.Fatalf("%s: %v", tt.fixture, err)
		}
		c := res.Choices[0]
		if len(res.Choices) != 1 || c.FinishReason != "content_filter" || string(c.Text) != tt.text || res.Images() != 0 {
			t.Errorf("%s: %+v", tt.fixture, res.Choices)
		}
	}
	res, _ := p.parseResult(fakeup.Fixture("gemini/response_image.json"))
	if res.Usage.TextTokens != 14 || res.Usage.PromptTokens != 17 || res.Images() != 1 || res.Choices[0].FinishReason != "stop" {
		t.Errorf("image answer: %+v usage %+v", res.Choices, res.Usage)
	}
}

func TestGeminiResponseInvalid(t *testing.T) {
	p := testGemini(t, "", nil)
	for name, body := range map[string]string{
		"html":            "<html>502</html>",
		"truncated":       `{"candidates": [{"content": {"parts": [{"text": "hi"}`,
		"no candidates":   `{"usageMetadata": {"promptTokenCount": 3}}`,
		"empty":           `{"candidates": []}`,
		"error in 200":    `{"error": {"code": 500, "message": "x"}}`,
		"bad base64":      `{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]}, "finishReason": "STOP"}]}`,
		"index too large": `{"candidates": [{"content": {"parts": [{"text": "hi"}]}, "index": 99}]}`,
		"array":           `[1]`,
	} {
		_, err := p.parseResult([]byte(body))
		if pe, ok := AsError(err); !ok || pe.Kind != KindInvalidResponse {
			t.Errorf("%s: err = %v, want KindInvalidResponse", name, err)
		}
	}
}

func TestGeminiErrorClassification(t *testing.T) {
	p := testGemini(t, "", nil)
	tests := []struct {
		fixture string
		status  int
		kind    ErrorKind
		retry   time.Duration
	}{
		{"error_400_invalid_argument", 400, KindClient, 0},
		{"error_400_api_key_invalid", 400, KindConfig, 0},
		{"error_403_permission_denied", 403, KindConfig, 0},
		{"error_404_model_not_found", 404, KindConfig, 0},
		{"error_429_resource_exhausted", 429, KindRateLimited, 13 * time.Second},
		{"error_429_prepay_depleted", 429, KindConfig, 0},
		{"error_500_internal", 500, KindServer, 0},
		{"error_503_unavailable", 503, KindServer, 0},
	}
	for _, tt := range tests {
		e := p.statusError(tt.status, fakeup.Fixture("gemini/"+tt.fixture+".json"))
		if e.Kind != tt.kind || e.RetryAfter != tt.retry || e.Status != tt.status || e.Message == "" || e.Provider != "google" {
			t.Errorf("%s: %+v, want kind %d retry %v", tt.fixture, e, tt.kind, tt.retry)
		}
		if e.Failover() != (tt.kind != KindClient) {
			t.Errorf("%s: Failover() = %v", tt.fixture, e.Failover())
		}
	}
	// The client's 400 keeps Google's explanation.
	e := p.statusError(400, fakeup.Fixture("gemini/error_400_invalid_argument.json"))
	if !strings.Contains(e.Message, `Unknown name "aspect_ratio"`) {
		t.Errorf("message %q", e.Message)
	}
	// A daily quota carries a retry time that no short wait honours.
	daily := `{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[
		{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel"}]},
		{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"41s"}]}}`
	if e := p.statusError(429, []byte(daily)); e.Kind != KindConfig {
		t.Errorf("daily quota: %+v", e)
	}
	// Region and plan refusals are the gateway's account, not the request.
	region := `{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}`
	if e := p.statusError(400, []byte(region)); e.Kind != KindConfig {
		t.Errorf("region: %+v", e)
	}
	// Not Google's envelope at all.
	if e := p.statusError(502, []byte("<html>bad gateway</html>")); e.Kind != KindServer || e.Message != "upstream answered HTTP 502" {
		t.Errorf("html 502: %+v", e)
	}
}

func TestGeminiErrorMessagesAreScrubbed(t *testing.T) {
	p := testGemini(t, "https://generativelanguage.googleapis.com/v1beta", nil)
	body := `{"error":{"code":400,"message":"API key AIzaTestKey0123456789 for https://generativelanguage.googleapis.com/v1beta?key=AIzaOther0123456789 is bad","status":"INVALID_ARGUMENT"}}`
	e := p.statusError(400, []byte(body))
	for _, secret := range []string{"AIzaTestKey0123456789", "AIzaOther0123456789", "generativelanguage.googleapis.com"} {
		if strings.Contains(e.Message, secret) || strings.Contains(e.Error(), secret) {
			t.Errorf("message leaks %q: %s", secret, e.Message)
		}
	}
}

func TestParseProtoDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"13s": 13 * time.Second, "13.516893206s": 13516893206, "0s": 0} {
		if got, ok := parseProtoDuration(in); !ok || got != want {
			t.Errorf("%q = %v %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "13", "-1s", "xs", "NaNs"} {
		if _, ok := parseProtoDuration(in); ok {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestVWalkerMatchesJSONX checks the trusting walker against jsonx on
// awkward but valid documents.
func TestVWalkerMatchesJSONX(t *testing.T) {
	docs := []string{
		`{"a":"x\"y\\","b":[1,{"c":"]}"}],"d":true,"e":null,"f":-1.5e3 , "g" : "\\\\" }`,
		`{}`, `{"a":{}}`, `{ "a" : [ ] , "b":"" }`,
		`{"k\"ey":"v"}`,
	}
	for _, d := range docs {
		var want, got []string
		jsonx.ObjectEach([]byte(d), func(k, v []byte) error {
			want = append(want, string(v))
			return nil
		})
		vMembers([]byte(d), func(k, v []byte) { got = append(got, string(v)) })
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s:\n got %q\nwant %q", d, got, want)
		}
	}
}

func TestValidB64(t *testing.T) {
	for _, s := range []string{redB64, checkB64, "QUJD", "QUI=", "QQ==", strings.Repeat("QUJD", 100)} {
		if !ValidBase64([]byte(s)) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "QUJ", "QU=D", "Q===", "QUJD\n", "QUJD QUJD", "QUJD-_==", strings.Repeat("QUJD", 100) + "QU!D"} {
		if ValidBase64([]byte(s)) {
			t.Errorf("%q accepted", s)
		}
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGeminiOutputTypeFromBytes: 3.x models answer JPEG and may label it
// image/png; the client gets the type the bytes show, in answers and streams.
func TestGeminiOutputTypeFromBytes(t *testing.T) {
	p := testGemini(t, "", nil)
	res, err := p.parseResult(fakeup.Fixture("gemini/response_3pro_interleaved_jpeg.json"))
	if err != nil {
		t.Fatal(err)
	}
	imgs := res.Choices[0].Images
	if len(imgs) != 2 || imgs[0].MIME != "image/jpeg" || imgs[1].MIME != "image/jpeg" {
		t.Fatalf("images %d, types %v", len(imgs), []string{imgs[0].MIME, imgs[1].MIME})
	}
	// A PNG labelled JPEG is a PNG; bytes of no known kind keep their label.
	for _, tt := range []struct{ label, b64, want string }{
		{"image/jpeg", tinyB64, "image/png"},
		{"image/png", tinyB64, "image/png"},
		{"image/webp", "AAAAAAAAAAAAAAAA", "image/webp"},
	} {
		body := `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"` + tt.label + `","data":"` + tt.b64 + `"}}]},"finishReason":"STOP"}]}`
		res, err := p.parseResult([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Choices[0].Images[0].MIME; got != tt.want {
			t.Errorf("%s labelled %s: %s, want %s", tt.b64[:8], tt.label, got, tt.want)
		}
	}
}

// TestTextOnlyAnswersCarryNoNotice: a request that asked for text only
// (modalities ["text"]) missed no image: its text answer is the model's
// text alone, whatever the finish reason; an empty one says why.
func TestTextOnlyAnswersCarryNoNotice(t *testing.T) {
	p := testGemini(t, "", nil)
	req, err := ParseChatRequest([]byte(`{"model":"m","modalities":["text"],"messages":[{"role":"user","content":"what is a panel?"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if wantsImages(req) {
		t.Fatal("a text-only request wants images")
	}
	for _, tt := range []struct{ body, text, finish string }{
		{`{"candidates":[{"content":{"parts":[{"text":"A frame."}]},"finishReason":"MAX_TOKENS"}]}`, "A frame.", "length"},
		{`{"candidates":[{"content":{"parts":[{"text":"A frame."}]},"finishReason":"STOP"}]}`, "A frame.", "stop"},
		{`{"candidates":[{"finishReason":"SAFETY"}]}`, "The model returned no answer (SAFETY).", "content_filter"},
	} {
		res, err := p.parseTextResult([]byte(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if c := res.Choices[0]; string(c.Text) != tt.text || c.FinishReason != tt.finish {
			t.Errorf("%s: text %q finish %s", tt.body, c.Text, c.FinishReason)
		}
	}
	// Asking for images, the same MAX_TOKENS answer says none came.
	res, _ := p.parseResult([]byte(`{"candidates":[{"content":{"parts":[{"text":"A frame."}]},"finishReason":"MAX_TOKENS"}]}`))
	if !strings.Contains(string(res.Choices[0].Text), noImageNotice) {
		t.Errorf("image request: %q", res.Choices[0].Text)
	}
}

// TestStreamSafetyNoticeIsARefusal: in a stream, the reason of a safety
// block is marked as a refusal; the reason of a cut (MAX_TOKENS) is not.
func TestStreamSafetyNoticeIsARefusal(t *testing.T) {
	p := testGemini(t, "", nil)
	for _, tt := range []struct {
		event   string
		refusal bool
	}{
		{`{"candidates": [{"content": {"role": "model"},"finishReason": "IMAGE_SAFETY","index": 0}]}`, true},
		{`{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}`, true},
		{`{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"finishReason": "MAX_TOKENS","index": 0}]}`, false},
	} {
		s := p.newStream(nil, strings.NewReader("data: "+tt.event+"\r\n\r\n"))
		var notice *Event
		for {
			ev, err := s.Next()
			if err != nil {
				break
			}
			if ev.Text != nil && strings.Contains(string(ev.Text), "returned no image") || strings.Contains(string(ev.Text), "blocked") {
				e := *ev
				notice = &e
			}
		}
		s.Close()
		if notice == nil || notice.Refusal != tt.refusal {
			t.Errorf("%s: notice %+v, want refusal %v", tt.event, notice, tt.refusal)
		}
	}
}

// TestPromptImageTokensAreRead: the IMAGE entry of Google's
// promptTokensDetails, and a reseller's prompt_tokens_details.image_tokens.
func TestPromptImageTokensAreRead(t *testing.T) {
	p := testGemini(t, "", nil)
	for fixture, want := range map[string]int64{
		"gemini/response_3pro_interleaved_jpeg.json": 560,
		"gemini/response_image_safety.json":          258,
		"gemini/response_image.json":                 0,
	} {
		res, err := p.parseResult(fakeup.Fixture(fixture))
		if err != nil {
			t.Fatal(err)
		}
		if res.Usage.PromptImageTokens != want {
			t.Errorf("%s: %d, want %d", fixture, res.Usage.PromptImageTokens, want)
		}
	}
	o := &OpenAI{opts: Options{TokensPerImage: 1290}}
	u := o.parseUsage([]byte(`{"prompt_tokens":300,"completion_tokens":1300,"prompt_tokens_details":{"cached_tokens":0,"image_tokens":258}}`), 1)
	if u.PromptImageTokens != 258 || u.PromptTokens != 300 {
		t.Errorf("reseller usage %+v", u)
	}
	u = o.parseUsage([]byte(`{"prompt_tokens":300,"completion_tokens":1300}`), 1)
	if u.PromptImageTokens != 0 {
		t.Errorf("reseller without details: %+v", u)
	}
}
