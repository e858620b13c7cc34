package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
)

type imagesResp struct {
	Created int64 `json:"created"`
	Data    []struct {
		B64JSON string `json:"b64_json"`
		URL     string `json:"url"`
	} `json:"data"`
	Usage struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func (e *env) postJSON(t *testing.T, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", e.gw.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+clientKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestImagesGenerationsTwoImages(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	resp := e.postJSON(t, "/v1/images/generations", `{"model":"`+model+`","prompt":"a nano banana","n":2,"size":"1792x1024"}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var r imagesResp
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Data) != 2 || r.Created == 0 {
		t.Fatalf("data = %d items", len(r.Data))
	}
	for _, d := range r.Data {
		img, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, img, fakeup.PNG(0))
	}
	if r.Usage.OutputTokens != 2580 || r.Usage.TotalTokens != r.Usage.InputTokens+2580 {
		t.Errorf("usage %+v", r.Usage)
	}
	if e.google.Requests() != 2 {
		t.Errorf("upstream calls = %d, want 2 (one per image)", e.google.Requests())
	}
	gr, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil || gr.AspectRatio != "16:9" {
		t.Errorf("aspect ratio sent to Google = %q (%v)", gr.AspectRatio, err)
	}
}

func TestImagesSizeToNearestRatio(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	for size, want := range map[string]string{"1024x1024": "1:1", "1024x1792": "9:16", "1536x1024": "3:2", "1000x750": "4:3", "2100x900": "21:9"} {
		readAll(t, e.postJSON(t, "/v1/images/generations", `{"prompt":"x","size":"`+size+`"}`))
		gr, _ := fakeup.ParseGeminiRequest(e.google.LastBody())
		if gr.AspectRatio != want {
			t.Errorf("size %s -> %q, want %q", size, gr.AspectRatio, want)
		}
	}
	readAll(t, e.postJSON(t, "/v1/images/generations", `{"prompt":"x","size":"auto"}`))
	if gr, _ := fakeup.ParseGeminiRequest(e.google.LastBody()); gr.AspectRatio != "" {
		t.Errorf("auto sent %q", gr.AspectRatio)
	}
}

func TestImagesURLFormatServesExactPNG(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetImageSize(400 << 10)
	var r imagesResp
	resp := e.postJSON(t, "/v1/images/generations", `{"prompt":"x","response_format":"url"}`)
	json.Unmarshal(readAll(t, resp), &r)
	if len(r.Data) != 1 || !strings.Contains(r.Data[0].URL, "/images/") || r.Data[0].B64JSON != "" {
		t.Fatalf("data %+v", r.Data)
	}
	code, img := fetch(t, r.Data[0].URL)
	if code != 200 {
		t.Fatalf("GET url: %d", code)
	}
	sameBytes(t, img, fakeup.PNG(400<<10))
}

func TestImagesOneOfNFailsOver(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetFault(fakeup.Fault{Status: 503, Times: 1})
	var r imagesResp
	resp := e.postJSON(t, "/v1/images/generations", `{"prompt":"x","n":3}`)
	json.Unmarshal(readAll(t, resp), &r)
	if resp.StatusCode != 200 || len(r.Data) != 3 {
		t.Fatalf("%d with %d images", resp.StatusCode, len(r.Data))
	}
	if e.reseller.Requests() != 1 || e.google.Requests() != 3 {
		t.Fatalf("google %d reseller %d: the failed image was not failed over", e.google.Requests(), e.reseller.Requests())
	}
	if !strings.Contains(resp.Header.Get("x-nanogate-provider"), "reseller") {
		t.Errorf("x-nanogate-provider = %q", resp.Header.Get("x-nanogate-provider"))
	}
}

func TestImagesRefusal(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetOutcome(fakeup.OutcomeNoImage)
	resp := e.postJSON(t, "/v1/images/generations", `{"prompt":"x"}`)
	if got := resp.Header.Get("x-nanogate-provider"); got != "google" {
		t.Errorf("x-nanogate-provider %q, want the provider that refused (google)", got)
	}
	expectError(t, resp, 400, "content_policy_violation")

	// An upstream error passed back as is names its provider too.
	e.google.SetOutcome(fakeup.OutcomeImage)
	e.google.SetFault(fakeup.Fault{Status: 400})
	resp = e.postJSON(t, "/v1/images/generations", `{"prompt":"x"}`)
	if got := resp.Header.Get("x-nanogate-provider"); got != "google" {
		t.Errorf("x-nanogate-provider %q on an upstream 400, want google", got)
	}
	readAll(t, resp)
	if resp.StatusCode != 400 || e.reseller.Requests() != 0 {
		t.Errorf("upstream 400: status %d, reseller called %d times", resp.StatusCode, e.reseller.Requests())
	}

	// So does a request for several images, each call of which failed.
	resp = e.postJSON(t, "/v1/images/generations", `{"prompt":"x","n":2}`)
	if got := resp.Header.Get("x-nanogate-provider"); got != "google" {
		t.Errorf("x-nanogate-provider %q on upstream 400s for n=2, want google", got)
	}
	readAll(t, resp)
	if resp.StatusCode != 400 {
		t.Errorf("upstream 400s for n=2: status %d, want 400", resp.StatusCode)
	}
}

// multipartBody builds an edits request; files are (field, content) pairs.
func multipartBody(t *testing.T, fields map[string]string, files [][2]string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	for i, f := range files {
		fw, _ := w.CreateFormFile(f[0], "f"+itoa(i)+".png")
		fw.Write([]byte(f[1]))
	}
	w.Close()
	return w.FormDataContentType(), buf.Bytes()
}

func (e *env) postMultipart(t *testing.T, ct string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", e.gw.URL+"/v1/images/edits", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+clientKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestImagesEditsTwoFilesInOrder(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	a, b := fakeup.NthPNG(5000, 0), fakeup.NthPNG(5000, 1)
	ct, body := multipartBody(t, map[string]string{"prompt": "blend them", "model": model},
		[][2]string{{"image[]", string(a)}, {"image[]", string(b)}})
	resp := e.postMultipart(t, ct, body)
	if got := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, got)
	}
	gr, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	text := ""
	for _, c := range gr.Contents {
		for _, p := range c.Parts {
			if p.Data != nil {
				got = append(got, p.Data)
			}
			text += p.Text
		}
	}
	if len(got) != 2 || text != "blend them" {
		t.Fatalf("Google got %d images, text %q", len(got), text)
	}
	sameBytes(t, got[0], a)
	sameBytes(t, got[1], b)
}

func TestImagesBadRequestsNeverReachUpstream(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	png := string(fakeup.PNG(0))
	ctOK, full := multipartBody(t, map[string]string{"prompt": "x"}, [][2]string{{"image", png}})
	tests := []struct {
		name   string
		ct     string
		body   []byte
		status int
		param  string
	}{
		{"no prompt", "", nil, 400, "prompt"},
		{"not an image", "", nil, 400, "image"},
		{"no image", "", nil, 400, "image"},
		{"mask", "", nil, 400, "mask"},
		{"unknown field", "", nil, 400, "background"},
		{"truncated body", ctOK, full[:len(full)-20], 400, ""},
		{"not multipart", "application/json", []byte(`{}`), 415, ""},
		{"oversize file", "", nil, 413, ""},
	}
	tests[0].ct, tests[0].body = multipartBody(t, nil, [][2]string{{"image", png}})
	tests[1].ct, tests[1].body = multipartBody(t, map[string]string{"prompt": "x"}, [][2]string{{"image", "GIF89a not a png"}})
	tests[2].ct, tests[2].body = multipartBody(t, map[string]string{"prompt": "x"}, nil)
	tests[3].ct, tests[3].body = multipartBody(t, map[string]string{"prompt": "x"}, [][2]string{{"image", png}, {"mask", png}})
	tests[4].ct, tests[4].body = multipartBody(t, map[string]string{"prompt": "x", "background": "transparent"}, [][2]string{{"image", png}})
	tests[7].ct, tests[7].body = multipartBody(t, map[string]string{"prompt": "x"}, [][2]string{{"image", png + strings.Repeat("x", 21<<20)}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := "invalid_request"
			if tt.status == 413 {
				code = "request_too_large"
			}
			env := expectError(t, e.postMultipart(t, tt.ct, tt.body), tt.status, code)
			if tt.param != "" && (env.Error.Param == nil || *env.Error.Param != tt.param) {
				t.Errorf("param = %v, want %q", env.Error.Param, tt.param)
			}
		})
	}
	for _, body := range []string{`{"n":1}`, `{"prompt":"x","n":11}`, `{"prompt":"x","size":"huge"}`, `{"prompt":"x","response_format":"gif"}`, `{"prompt":"x","foo":1}`, `{"prompt":5}`} {
		expectError(t, e.postJSON(t, "/v1/images/generations", body), 400, "invalid_request")
	}
	if n := e.google.Requests() + e.reseller.Requests(); n != 0 {
		t.Fatalf("%d bad requests reached an upstream", n)
	}
}

func TestImagesAcceptsSDKDefaults(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	resp := e.postJSON(t, "/v1/images/generations", `{"prompt":"x","stream":false,"output_format":"png","quality":"high","user":"u"}`)
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	expectError(t, e.postJSON(t, "/v1/images/generations", `{"prompt":"x","stream":true}`), 400, "invalid_request")
	expectError(t, e.postJSON(t, "/v1/images/generations", `{"prompt":"x","output_format":"webp"}`), 400, "invalid_request")
}
