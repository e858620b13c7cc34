package fakeup

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

type genResponse struct {
	Candidates []struct {
		Content *struct {
			Parts []struct {
				Text       *string `json:"text"`
				InlineData *struct {
					MimeType string `json:"mimeType"`
					Data     string `json:"data"`
				} `json:"inlineData"`
			} `json:"parts"`
			Role string `json:"role"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	UsageMetadata struct {
		PromptTokenCount        int `json:"promptTokenCount"`
		CandidatesTokenCount    int `json:"candidatesTokenCount"`
		TotalTokenCount         int `json:"totalTokenCount"`
		CandidatesTokensDetails []struct {
			Modality   string `json:"modality"`
			TokenCount int    `json:"tokenCount"`
		} `json:"candidatesTokensDetails"`
	} `json:"usageMetadata"`
	ModelVersion string `json:"modelVersion"`
	ResponseID   string `json:"responseId"`
}

func TestGeminiGenerateContentImage(t *testing.T) {
	s := startT(t, Options{Kind: Gemini, Key: testKey})
	const size = 1_500_000
	s.SetImageSize(size)
	a := do(t, "POST", genURL(s), genBody, googKey(testKey))
	if a.status != 200 || a.err != nil {
		t.Fatalf("status %d err %v: %s", a.status, a.err, clipS(string(a.body)))
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if !bytes.HasPrefix(a.body, []byte("{\n  \"candidates\": [\n    {\n")) || !bytes.HasSuffix(a.body, []byte("}\n")) {
		t.Errorf("not Google's 2-space layout: %q", clipS(string(a.body)))
	}
	var g genResponse
	if err := json.Unmarshal(a.body, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Candidates) != 1 || g.Candidates[0].FinishReason != "STOP" || g.Candidates[0].Content.Role != "model" {
		t.Fatalf("candidates %+v", g.Candidates)
	}
	parts := g.Candidates[0].Content.Parts
	if len(parts) != 2 || parts[0].Text == nil || *parts[0].Text != Text || parts[1].InlineData == nil || parts[1].InlineData.MimeType != "image/png" {
		t.Fatalf("parts: want text then inlineData")
	}
	if raw := checkPNG(t, parts[1].InlineData.Data, size); !bytes.Equal(raw, PNG(size)) {
		t.Error("image is not PNG(size)")
	}
	u := g.UsageMetadata
	if u.CandidatesTokenCount != ImageTokens+14 || u.TotalTokenCount != u.PromptTokenCount+u.CandidatesTokenCount {
		t.Errorf("usage %+v", u)
	}
	if len(u.CandidatesTokensDetails) != 1 || u.CandidatesTokensDetails[0].Modality != "IMAGE" || u.CandidatesTokensDetails[0].TokenCount != ImageTokens {
		t.Errorf("candidatesTokensDetails %+v: want IMAGE only", u.CandidatesTokensDetails)
	}
	if g.ModelVersion != "gemini-2.5-flash-image" || g.ResponseID == "" {
		t.Errorf("modelVersion %q responseId %q", g.ModelVersion, g.ResponseID)
	}
	if a.header.Get("Server") != "scaffolding on HTTPServer2" {
		t.Errorf("Server header %q", a.header.Get("Server"))
	}
	if s.LastAuth() != testKey || s.LastPath() != "/v1beta/models/gemini-2.5-flash-image:generateContent" || string(s.LastBody()) != genBody {
		t.Errorf("recorded %q %q", s.LastAuth(), s.LastPath())
	}
}

func TestGeminiTwoImagesNoText(t *testing.T) {
	s := startT(t, Options{Kind: Gemini})
	s.SetImages(2)
	s.SetTextTokens(0)
	s.SetPromptTokens(21)
	a := do(t, "POST", genURL(s), genBody, nil)
	var g genResponse
	if err := json.Unmarshal(a.body, &g); err != nil {
		t.Fatal(err)
	}
	parts := g.Candidates[0].Content.Parts
	if len(parts) != 2 || parts[0].InlineData == nil || parts[1].InlineData == nil {
		t.Fatal("want two inlineData parts and no text")
	}
	for i, p := range parts {
		if raw := checkPNG(t, p.InlineData.Data, 0); !bytes.Equal(raw, NthPNG(0, i)) {
			t.Errorf("image %d is not NthPNG(0, %d)", i, i)
		}
	}
	// Same numbers as gemini/response_two_images.json.
	u := g.UsageMetadata
	if u.PromptTokenCount != 21 || u.CandidatesTokenCount != 2580 || u.TotalTokenCount != 2601 || u.CandidatesTokensDetails[0].TokenCount != 2580 {
		t.Errorf("usage %+v", u)
	}
}

func TestGeminiOutcomesAreFixtures(t *testing.T) {
	s := startT(t, Options{Kind: Gemini})
	for mode, file := range map[string]string{
		OutcomeTextOnly:      "gemini/response_text_only.json",
		OutcomeNoImage:       "gemini/response_no_image.json",
		OutcomeImageSafety:   "gemini/response_image_safety.json",
		OutcomePromptBlocked: "gemini/response_prompt_blocked.json",
	} {
		s.SetOutcome(mode)
		a := do(t, "POST", genURL(s), genBody, nil)
		if a.status != 200 || !bytes.Equal(a.body, Fixture(file)) {
			t.Errorf("%s: status %d body %s", mode, a.status, a.body)
		}
		a = do(t, "POST", streamURL(s), genBody, nil)
		evs := sseEvents(t, a.body, "\r\n\r\n")
		if len(evs) != 1 || evs[0] != string(googleLine(compact(Fixture(file)))) {
			t.Errorf("%s stream: %q", mode, evs)
		}
	}
}

func TestGeminiStreamLayout(t *testing.T) {
	s := startT(t, Options{Kind: Gemini, Key: testKey})
	const size = 700_000
	s.SetImageSize(size)
	s.SetImages(2)
	a := do(t, "POST", streamURL(s), genBody, googKey(testKey))
	if a.status != 200 || a.header.Get("Content-Type") != "text/event-stream" || a.header.Get("Content-Disposition") != "attachment" {
		t.Fatalf("status %d, headers %v", a.status, a.header)
	}
	if bytes.Contains(a.body, []byte("[DONE]")) {
		t.Error("Google streams have no [DONE]")
	}
	if n := bytes.Count(a.body, []byte("\r\n\r\n")); n != 5 {
		t.Errorf("%d \\r\\n\\r\\n separators, want 5", n)
	}
	evs := sseEvents(t, a.body, "\r\n\r\n")
	if len(evs) != 5 { // three text events, two image events
		t.Fatalf("%d events", len(evs))
	}
	var text strings.Builder
	prevCand := 0
	for i, e := range evs {
		if !strings.HasPrefix(e, `{"candidates": [{"content": {"parts": [{`) || !strings.Contains(e, `],"role": "model"},`) {
			t.Errorf("event %d is not in Google's one-line layout: %q", i, clipS(e))
		}
		var g genResponse
		if err := json.Unmarshal([]byte(e), &g); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		u := g.UsageMetadata
		if u.CandidatesTokenCount < prevCand {
			t.Errorf("event %d: usage is not cumulative", i)
		}
		prevCand = u.CandidatesTokenCount
		last := i == len(evs)-1
		if (g.Candidates[0].FinishReason == "STOP") != last || (len(u.CandidatesTokensDetails) > 0) != last {
			t.Errorf("event %d: finishReason %q details %v", i, g.Candidates[0].FinishReason, u.CandidatesTokensDetails)
		}
		p := g.Candidates[0].Content.Parts[0]
		if i < 3 {
			text.WriteString(*p.Text)
			continue
		}
		if raw := checkPNG(t, p.InlineData.Data, size); !bytes.Equal(raw, NthPNG(size, i-3)) {
			t.Errorf("event %d carries the wrong image", i)
		}
	}
	if text.String() != Text {
		t.Errorf("streamed text %q", text.String())
	}
	if prevCand != 14+2*ImageTokens {
		t.Errorf("final candidatesTokenCount %d", prevCand)
	}
}

func TestGeminiStreamWithoutAltIsJSONArray(t *testing.T) {
	s := startT(t, Options{Kind: Gemini})
	a := do(t, "POST", s.URL()+"/models/gemini-2.5-flash-image:streamGenerateContent", genBody, nil)
	var arr []genResponse
	if err := json.Unmarshal(a.body, &arr); err != nil || a.status != 200 {
		t.Fatalf("%d %v: %s", a.status, err, clipS(string(a.body)))
	}
	if len(arr) != 4 || arr[3].Candidates[0].FinishReason != "STOP" || arr[3].Candidates[0].Content.Parts[0].InlineData == nil {
		t.Fatalf("array of %d", len(arr))
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestGeminiAuthAndModel(t *testing.T) {
	s := startT(t, Options{Kind: Gemini, Key: testKey})
	cases := []struct {
		name   string
		url    string
		header map[string]string
		status int
		want   []byte
	}{
		{"wrong key", genURL(s), googKey("AIza-wrong"), 400, Fixture("gemini/error_400_api_key_invalid.json")},
		{"no key", genURL(s), nil, 403, Fixture("gemini/error_403_permission_denied.json")},
		{"bearer is not a Google key", genURL(s), bearer(testKey), 403, Fixture("gemini/error_403_permission_denied.json")},
		{"retired model", s.URL() + "/models/gemini-2.5-flash-image-preview:generateContent", googKey(testKey), 404, Fixture("gemini/error_404_model_not_found.json")},
		{"good", genURL(s), googKey(testKey), 200, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := do(t, "POST", c.url, genBody, c.header)
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, a.body)
			}
			if c.want != nil && !bytes.Equal(a.body, c.want) {
				t.Errorf("body %s", a.body)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}

	a := do(t, "POST", s.URL()+"/models/imagen-\"4\":generateContent", genBody, googKey(testKey))
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil || a.status != 404 || e.Error.Status != "NOT_FOUND" ||
		!strings.HasPrefix(e.Error.Message, `models/imagen-"4" is not found for API version v1beta`) {
		t.Errorf("404 for another model: %d %v %s", a.status, err, a.body)
	}

	s.SetModels("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
	if a := do(t, "POST", s.URL()+"/models/gemini-3-pro-image-preview:generateContent", genBody, googKey(testKey)); a.status != 200 {
		t.Errorf("SetModels: %d", a.status)
	}
}

func TestGeminiRequestChecks(t *testing.T) {
	s := startT(t, Options{Kind: Gemini})
	tiny := PNGBase64(0)
	cases := []struct {
		name   string
		body   string
		status int
		field  string
	}{
		{"camelCase", string(Fixture("gemini/request_edit_two_images.json")), 200, ""},
		{"snake_case", string(Fixture("gemini/request_edit_snake_case.json")), 200, ""},
		{"not JSON", `{"contents": [`, 400, ""},
		{"no contents", `{"generationConfig": {}}`, 400, "contents"},
		{"empty parts", `{"contents": [{"role": "user", "parts": []}]}`, 400, "contents[0].parts"},
		{"OpenAI part forwarded", `{"contents": [{"parts": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, 400, "contents[0].parts[0].data"},
		{"data URL left in", `{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "data:image/png;base64,` + tiny + `"}}]}]}`, 400, "contents[0].parts[0].inline_data.data"},
		{"base64 twice", `{"contents": [{"parts": [{"inline_data": {"mime_type": "image/png", "data": "` + b64(tiny) + `"}}]}]}`, 400, ""},
		{"url-safe unpadded", `{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "` + strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(tiny), "=") + `"}}]}]}`, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := do(t, "POST", genURL(s), c.body, nil)
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, a.body)
			}
			if c.status == 400 {
				var e struct {
					Error struct {
						Status  string `json:"status"`
						Details []struct {
							FieldViolations []struct {
								Field string `json:"field"`
							} `json:"fieldViolations"`
						} `json:"details"`
					} `json:"error"`
				}
				if err := json.Unmarshal(a.body, &e); err != nil || e.Error.Status != "INVALID_ARGUMENT" {
					t.Fatalf("error body %s", a.body)
				}
				if c.field != "" && (len(e.Error.Details) != 1 || e.Error.Details[0].FieldViolations[0].Field != c.field) {
					t.Errorf("field violations %+v", e.Error.Details)
				}
			}
		})
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseGeminiRequestFoldsSpellings(t *testing.T) {
	camel, err := ParseGeminiRequest(Fixture("gemini/request_edit_two_images.json"))
	if err != nil {
		t.Fatal(err)
	}
	snake, err := ParseGeminiRequest(Fixture("gemini/request_edit_snake_case.json"))
	if err != nil {
		t.Fatal(err)
	}
	if camel.SnakeCase || !snake.SnakeCase {
		t.Errorf("SnakeCase camel=%v snake=%v", camel.SnakeCase, snake.SnakeCase)
	}
	if snake.AspectRatio != "1:1" || camel.AspectRatio != "" {
		t.Errorf("aspect ratios %q %q", snake.AspectRatio, camel.AspectRatio)
	}
	snake.SnakeCase, snake.AspectRatio = false, ""
	if !reflect.DeepEqual(camel, snake) {
		t.Errorf("spellings differ:\n%+v\n%+v", camel, snake)
	}
	if camel.SystemInstruction == nil || len(camel.Contents) != 1 || len(camel.Contents[0].Parts) != 3 {
		t.Fatalf("shape %+v", camel)
	}
	img := camel.Contents[0].Parts[1]
	if img.MimeType != "image/png" || !bytes.Equal(img.Data, Fixture("tiny.png")) {
		t.Errorf("first image is not tiny.png: %q %d bytes", img.MimeType, len(img.Data))
	}
	if !reflect.DeepEqual(camel.ResponseModalities, []string{"TEXT", "IMAGE"}) {
		t.Errorf("modalities %v", camel.ResponseModalities)
	}
	if _, err := ParseGeminiRequest([]byte(`{"contents": []}`)); err == nil {
		t.Error("empty contents parsed")
	}
}
