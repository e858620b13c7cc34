package provider

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"nanogate/config"
	"nanogate/internal/fakeup"
	"nanogate/internal/safefetch"
)

// The golden files under testdata/gemini are compared byte for byte. After a
// deliberate change of the translation, rewrite them with
//
//	go test ./provider/ -run Gemini -update
//
// and review the diff.
func init() {
	// Registered only once, should another test file of the package want
	// the same flag.
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files under testdata/")
	}
}

func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// golden compares got with the file at path (or rewrites it with -update).
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if updating() {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs at line %d:\n got: %.200s\nwant: %.200s\n(rerun with -update if the change is meant)", path, i+1, g, w)
			}
		}
	}
}

// indentJSON lays out a compact document for a readable golden file; the
// wire bytes are checked to be that compact document, so comparing the
// indented form is comparing the bytes.
func indentJSON(t *testing.T, raw []byte) []byte {
	t.Helper()
	var c bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		t.Fatalf("not JSON: %v: %.300s", err, raw)
	}
	if !bytes.Equal(c.Bytes(), raw) {
		t.Fatalf("not compact JSON: %.300s", raw)
	}
	var b bytes.Buffer
	json.Indent(&b, raw, "", "  ")
	b.WriteByte('\n')
	return b.Bytes()
}

const testModel = "gemini-2.5-flash-image"

var (
	redPNG   = fakeup.Fixture("tiny.png")
	redB64   = base64.StdEncoding.EncodeToString(redPNG)
	checkB64 = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR42mP4//8/AwQAWQAp5AX7tiFYxAAAAABJRU5ErkJggg=="
	// jpegHead is the head of a 2x2 JPEG: JFIF, then the frame header.
	jpegHead = []byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" +
		"\xff\xc0\x00\x11\x08\x00\x02\x00\x02\x03\x01\x11\x00\x02\x11\x01\x03\x11\x01\xff\xd9")
)

// stubFetcher serves images from a map, as the fetcher would download them,
// charging their size to the budget.
type stubFetcher struct {
	images map[string]*safefetch.Image
	mu     sync.Mutex
	calls  []string
}

func (s *stubFetcher) FetchImage(ctx context.Context, url string, b safefetch.Budget) (*safefetch.Image, error) {
	s.mu.Lock()
	s.calls = append(s.calls, url)
	s.mu.Unlock()
	img, ok := s.images[url]
	if !ok {
		return nil, &safefetch.Error{Reason: "fetching the image URL answered HTTP 404"}
	}
	if b != nil {
		if err := b.Take(ctx, int64(len(img.Data))); err != nil {
			return nil, err
		}
	}
	return img, nil
}

func newStub() *stubFetcher {
	return &stubFetcher{images: map[string]*safefetch.Image{
		"https://images.example.com/cat.png": {MIME: "image/png", Data: redPNG},
		"https://cdn.example.com/sofa.jpg":   {MIME: "image/jpeg", Data: jpegHead},
	}}
}

// testGemini is a provider for translation tests; its base URL is never
// dialled.
func testGemini(t testing.TB, base string, f ImageFetcher) *Gemini {
	t.Helper()
	if base == "" {
		base = "http://127.0.0.1:9/v1beta"
	}
	p, err := NewGemini(config.Provider{Name: "google", Kind: "gemini", BaseURL: base, APIKey: "AIzaTestKey0123456789"}, Options{Fetcher: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// translate runs the request side of the provider: parse, plan, fetch, write.
func translate(t testing.TB, p *Gemini, body []byte, model string) ([]byte, error) {
	t.Helper()
	req, err := ParseChatRequest(body)
	if err != nil {
		t.Fatalf("ParseChatRequest: %v", err)
	}
	if err := p.Prepare(context.Background(), req, model); err != nil {
		return nil, err
	}
	defer req.ReleaseImages()
	plan, _ := planGemini(req, model)
	return appendGeminiBody(nil, req, plan), nil
}

func TestGeminiRequestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/gemini/request/*.json")
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.json") {
			continue
		}
		n++
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := translate(t, testGemini(t, "", newStub()), body, testModel)
			if err != nil {
				t.Fatal(err)
			}
			// What Google's fake accepts, Google's parser accepts.
			if _, err := fakeup.ParseGeminiRequest(raw); err != nil {
				t.Fatalf("the fake Google refuses the request: %v", err)
			}
			golden(t, strings.TrimSuffix(f, ".json")+".golden.json", indentJSON(t, raw))
		})
	}
	if n < 9 {
		t.Fatalf("found %d request cases", n)
	}
}

// TestGeminiRequestMatchesGoogleFixture translates the OpenAI multi-image
// fixture and compares it with the Gemini fixture of the same request.
func TestGeminiRequestMatchesGoogleFixture(t *testing.T) {
	raw, err := translate(t, testGemini(t, "", nil), fakeup.Fixture("openai/request_chat_multi_image.json"), testModel)
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(fakeup.Fixture("gemini/request_edit_two_images.json"), &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("translation differs from gemini/request_edit_two_images.json:\n%s", raw)
	}
}

// TestGeminiRequestImagesIntact decodes what Google would receive: every
// image, in order, byte for byte, from data URLs, URLs and a markdown image
// of a previous answer.
func TestGeminiRequestImagesIntact(t *testing.T) {
	body := `{"model":"m","messages":[
		{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,` + redB64 + `"}},
			{"type":"image_url","image_url":{"url":"https://cdn.example.com/sofa.jpg"}},
			{"type":"image_url","image_url":{"url":"data:image/png;base64,` + checkB64 + `"}}]},
		{"role":"assistant","content":"ok ![image](data:image\/png;base64,` + strings.ReplaceAll(checkB64, "/", `\/`) + `) done"},
		{"role":"user","content":"again"}]}`
	raw, err := translate(t, testGemini(t, "", newStub()), []byte(body), testModel)
	if err != nil {
		t.Fatal(err)
	}
	g, err := fakeup.ParseGeminiRequest(raw)
	if err != nil {
		t.Fatal(err)
	}
	check, _ := base64.StdEncoding.DecodeString(checkB64)
	want := [][]byte{redPNG, jpegHead, check}
	if len(g.Contents) != 3 || len(g.Contents[0].Parts) != 3 || g.Contents[1].Role != "model" {
		t.Fatalf("contents: %+v", g.Contents)
	}
	for i, w := range want {
		if !bytes.Equal(g.Contents[0].Parts[i].Data, w) {
			t.Fatalf("image %d altered", i)
		}
	}
	m := g.Contents[1].Parts
	if len(m) != 3 || m[0].Text != "ok" || !bytes.Equal(m[1].Data, check) || m[1].MimeType != "image/png" || m[2].Text != "done" {
		t.Fatalf("previous answer: %+v", m)
	}
}

func TestGeminiMaxOutputTokensRule(t *testing.T) {
	tests := []struct {
		maxTokens int64
		images    bool
		want      int64
	}{
		{0, true, 0},       // absent: Google's default
		{1290, true, 2580}, // the reseller docs' "one image": text allowance 1290 plus the image
		{100, true, 1390},
		{100, false, 100}, // text only
		{40000, true, 32768},
		{32768, false, 32768},
	}
	for _, tt := range tests {
		if got := GeminiMaxOutputTokens(tt.maxTokens, tt.images); got != tt.want {
			t.Errorf("GeminiMaxOutputTokens(%d, %v) = %d, want %d", tt.maxTokens, tt.images, got, tt.want)
		}
	}
}

func TestGeminiRequestRefusals(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, body, model, param string
	}{
		{"n on a 3.x model", `{"model":"m",` + msgs + `,"n":2}`, "gemini-3-pro-image-preview", "n"},
		{"logit_bias", `{"model":"m",` + msgs + `,"logit_bias":{"50256":-100}}`, testModel, "logit_bias"},
		{"tools", `{"model":"m",` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}}]}`, testModel, "tools"},
		{"tool_choice required", `{"model":"m",` + msgs + `,"tool_choice":"required"}`, testModel, "tool_choice"},
		{"json mode", `{"model":"m",` + msgs + `,"response_format":{"type":"json_object"}}`, testModel, "response_format"},
		{"logprobs", `{"model":"m",` + msgs + `,"logprobs":true}`, testModel, "logprobs"},
		{"reasoning_effort", `{"model":"m",` + msgs + `,"reasoning_effort":"low"}`, testModel, "reasoning_effort"},
		{"audio modality", `{"model":"m",` + msgs + `,"modalities":["text","audio"]}`, testModel, "modalities"},
		{"empty modalities", `{"model":"m",` + msgs + `,"modalities":[]}`, testModel, "modalities"},
		{"priority tier", `{"model":"m",` + msgs + `,"service_tier":"priority"}`, testModel, "service_tier"},
		{"penalty out of range", `{"model":"m",` + msgs + `,"presence_penalty":3}`, testModel, "presence_penalty"},
		{"seed over 32 bits", `{"model":"m",` + msgs + `,"seed":4294967296}`, testModel, "seed"},
		{"image in a system message", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,` + redB64 + `"}}]},{"role":"user","content":"hi"}]}`, testModel, "messages[0].content[0]"},
		{"only a system message", `{"model":"m","messages":[{"role":"system","content":"be nice"}]}`, testModel, "messages"},
		{"only empty text", `{"model":"m","messages":[{"role":"user","content":""}]}`, testModel, "messages"},
		{"unfetchable image URL", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"https://gone.example.com/x.png"}}]}]}`, testModel, "messages[0].content[1].image_url.url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := newStub()
			_, err := translate(t, testGemini(t, "", stub), []byte(tt.body), tt.model)
			pe, ok := AsError(err)
			if !ok || pe.Kind != KindClient || pe.Status != 400 || pe.Param != tt.param || pe.Message == "" {
				t.Fatalf("err = %#v, want a KindClient 400 on %q", err, tt.param)
			}
			if tt.param != "messages[0].content[1].image_url.url" && len(stub.calls) > 0 {
				t.Fatalf("fetched %v for a request refused anyway", stub.calls)
			}
		})
	}
}

func TestGeminiRequestAcceptsHarmlessParams(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"u","metadata":{"a":"b"},"store":true,
		"safety_identifier":"s","prompt_cache_key":"k","parallel_tool_calls":false,"tools":[],"tool_choice":"auto",
		"logprobs":false,"top_logprobs":0,"logit_bias":{},"service_tier":"auto","verbosity":"medium","frequency_penalty":0}`
	raw, err := translate(t, testGemini(t, "", nil), []byte(body), testModel)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("Penalty")) || !bytes.Contains(raw, []byte(`"responseModalities":["TEXT","IMAGE"]`)) {
		t.Fatalf("request: %s", raw)
	}
}

func TestGeminiCandidateCount(t *testing.T) {
	raw, err := translate(t, testGemini(t, "", nil), []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"n":3,"max_tokens":10}`), testModel)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"candidateCount":3,"maxOutputTokens":1300`)) {
		t.Fatalf("request: %s", raw)
	}
}
