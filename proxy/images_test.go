package proxy

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
)

// imagesAnswer is OpenAI's Images API answer.
type imagesAnswer struct {
	Created int64 `json:"created"`
	Data    []struct {
		B64JSON *string `json:"b64_json"`
		URL     *string `json:"url"`
	} `json:"data"`
	Usage struct {
		InputTokens        int64 `json:"input_tokens"`
		InputTokensDetails struct {
			TextTokens  int64 `json:"text_tokens"`
			ImageTokens int64 `json:"image_tokens"`
		} `json:"input_tokens_details"`
		OutputTokens int64 `json:"output_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	} `json:"usage"`
}

// TestImagesGenerationsAnswerB64JSON: /v1/images/generations with n=2
// makes one upstream call per image and answers both as b64_json PNGs,
// with GPT image usage (output tokens are the images'); the request is
// logged once with both attempts and billed per upstream call, at the
// logged cost.
func TestImagesGenerationsAnswerB64JSON(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"a nano banana","n":2,"size":"1792x1024"}`,
		"x-request-id", "trace-img")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r.header.Get("x-nanogate-provider") != "up" || r.header.Get("x-request-id") != "trace-img" {
		t.Errorf("headers %v", r.header)
	}
	var a imagesAnswer
	decode(t, r, &a)
	if a.Created == 0 || len(a.Data) != 2 {
		t.Fatalf("answer %s", r.body)
	}
	for i, d := range a.Data {
		if d.URL != nil || d.B64JSON == nil {
			t.Fatalf("image %d: %s", i, r.body)
		}
		raw, err := base64.StdEncoding.DecodeString(*d.B64JSON)
		if err != nil || !bytes.Equal(raw, fakeup.PNG(0)) {
			t.Errorf("image %d is not the upstream's PNG (%v)", i, err)
		}
	}
	u := a.Usage
	if u.OutputTokens != 2*fakeup.ImageTokens || u.InputTokens != 2*540 || u.TotalTokens != u.InputTokens+u.OutputTokens ||
		u.InputTokensDetails.TextTokens+u.InputTokensDetails.ImageTokens != u.InputTokens {
		t.Errorf("usage %+v", u)
	}
	if ts.up.Requests() != 2 || !strings.Contains(string(ts.up.LastBody()), "a nano banana") {
		t.Errorf("upstream: %d requests, last %.300s", ts.up.Requests(), ts.up.LastBody())
	}

	l := ts.requestLine(t, "trace-img")
	for k, want := range map[string]any{"route": "images", "model": testModel, "status": int64(200), "images": int64(2),
		"attempts": int64(2), "provider": "up", "key": "ci", "team": "design"} {
		if l[k] != want {
			t.Errorf("log field %s = %#v, want %#v", k, l[k], want)
		}
	}
	us := ts.usageOf(t, ciKey)
	if us.Key.Requests != 2 || us.Key.Images != 2 || us.Key.Failed != 0 || us.Key.CostUSD != float64(l["cost_micros"].(int64))/1e6 {
		t.Errorf("usage %+v, logged cost %v", us.Key, l["cost_micros"])
	}
}

// TestImagesGenerationsAnswerURLsServedByTheStore: response_format url
// answers a signed link of the gateway's own image store, which serves
// the upstream's PNG; the same link with another signature is refused.
func TestImagesGenerationsAnswerURLsServedByTheStore(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetImageSize(3000)
	r := ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"a nano banana","response_format":"url"}`)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var a imagesAnswer
	decode(t, r, &a)
	if len(a.Data) != 1 || a.Data[0].URL == nil || a.Data[0].B64JSON != nil ||
		!strings.HasPrefix(*a.Data[0].URL, ts.url+"/images/") || !strings.Contains(*a.Data[0].URL, "sig=") {
		t.Fatalf("answer %s", r.body)
	}
	link := *a.Data[0].URL
	img := send(t, "GET", link, "", "", nil)
	if img.status != 200 || !bytes.Equal(img.body, fakeup.PNG(3000)) || img.header.Get("Content-Type") != "image/png" {
		t.Errorf("GET link: %d %s, %d bytes", img.status, img.header.Get("Content-Type"), len(img.body))
	}
	i := strings.Index(link, "sig=") + len("sig=")
	forged := link[:i] + strings.Repeat("A", len(link)-i)
	if r := send(t, "GET", forged, "", "", nil); r.status != 403 {
		t.Errorf("a forged signature: %d", r.status)
	}
}

// TestImagesEditsAnswerB64JSON: /v1/images/edits takes a multipart form
// with the image file, sends the image to the upstream with the prompt,
// and answers b64_json; it is logged under its own route.
func TestImagesEditsAnswerB64JSON(t *testing.T) {
	ts := startServer(t, serverOpts{})
	in := fakeup.NthPNG(300, 1)
	ct, body := multipartForm(t, []string{"prompt", "make it blue", "model", testModel},
		[3]string{"image", "in.png", string(in)})
	r := send(t, "POST", ts.url+"/v1/images/edits", ciKey, ct, body, "x-request-id", "trace-edit")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var a imagesAnswer
	decode(t, r, &a)
	if len(a.Data) != 1 || a.Data[0].B64JSON == nil || *a.Data[0].B64JSON != fakeup.PNGBase64(0) {
		t.Fatalf("answer %.300s", r.body)
	}
	sent := string(ts.up.LastBody())
	if !strings.Contains(sent, "make it blue") || !strings.Contains(sent, "data:image/png;base64,"+fakeup.NthPNGBase64(300, 1)) {
		t.Errorf("the upstream did not get the prompt and the image: %.300s", sent)
	}
	if l := ts.requestLine(t, "trace-edit"); l["route"] != "images_edits" || l["status"] != int64(200) || l["images"] != int64(1) {
		t.Errorf("log line %v", l)
	}
}

// TestImagesEditsAnswerURLs: an edit with response_format url answers a
// link the store serves.
func TestImagesEditsAnswerURLs(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ct, body := multipartForm(t, []string{"prompt", "make it blue", "response_format", "url"},
		[3]string{"image[]", "a.png", string(fakeup.NthPNG(300, 1))}, [3]string{"image[]", "b.png", string(fakeup.NthPNG(300, 2))})
	r := send(t, "POST", ts.url+"/v1/images/edits", ciKey, ct, body)
	var a imagesAnswer
	decode(t, r, &a)
	if r.status != 200 || len(a.Data) != 1 || a.Data[0].URL == nil {
		t.Fatalf("%d %.300s", r.status, r.body)
	}
	if img := send(t, "GET", *a.Data[0].URL, "", "", nil); img.status != 200 || !bytes.Equal(img.body, fakeup.PNG(0)) {
		t.Errorf("GET link: %d, %d bytes", img.status, len(img.body))
	}
	sent := string(ts.up.LastBody())
	if !strings.Contains(sent, fakeup.NthPNGBase64(300, 1)) || !strings.Contains(sent, fakeup.NthPNGBase64(300, 2)) ||
		strings.Index(sent, fakeup.NthPNGBase64(300, 1)) > strings.Index(sent, fakeup.NthPNGBase64(300, 2)) {
		t.Error("the upstream did not get both images in order")
	}
}

// TestImagesRefuseBadRequestsBeforeTheUpstream: each bad Images request is
// answered in OpenAI's envelope naming the parameter, logged under its
// route, and never reaches the upstream.
func TestImagesRefuseBadRequestsBeforeTheUpstream(t *testing.T) {
	ts := startServer(t, serverOpts{})
	png := string(fakeup.PNG(0))
	ctEdit, okEdit := multipartForm(t, []string{"prompt", "x"}, [3]string{"image", "a.png", png})
	ctNoImage, noImage := multipartForm(t, []string{"prompt", "x"})
	ctNotImage, notImage := multipartForm(t, []string{"prompt", "x"}, [3]string{"image", "a.png", "not a picture at all"})
	ctMask, mask := multipartForm(t, []string{"prompt", "x"}, [3]string{"image", "a.png", png}, [3]string{"mask", "m.png", png})
	for _, tc := range []struct {
		name, path, key, ctype string
		body                   []byte
		status                 int
		code, param            string
	}{
		{"generations multipart", "/v1/images/generations", ciKey, ctEdit, okEdit, 415, "invalid_request", ""},
		{"generations not json", "/v1/images/generations", ciKey, "application/json", []byte(`{"prompt":`), 400, "invalid_request", ""},
		{"generations no prompt", "/v1/images/generations", ciKey, "application/json", []byte(`{"n":1}`), 400, "invalid_request", "prompt"},
		{"generations n too large", "/v1/images/generations", ciKey, "application/json", []byte(`{"prompt":"x","n":11}`), 400, "invalid_request", "n"},
		{"generations bad size", "/v1/images/generations", ciKey, "application/json", []byte(`{"prompt":"x","size":"big"}`), 400, "invalid_request", "size"},
		{"generations bad format", "/v1/images/generations", ciKey, "application/json", []byte(`{"prompt":"x","response_format":"gif"}`), 400, "invalid_request", "response_format"},
		{"generations unknown field", "/v1/images/generations", ciKey, "application/json", []byte(`{"prompt":"x","colour":"red"}`), 400, "invalid_request", "colour"},
		{"generations unknown model", "/v1/images/generations", ciKey, "application/json", []byte(`{"prompt":"x","model":"no-such-model"}`), 404, "model_not_found", "model"},
		{"generations model not allowed", "/v1/images/generations", narrowKey, "application/json", []byte(`{"prompt":"x","model":"` + testModel + `"}`), 403, "model_not_allowed", "model"},
		{"edits json", "/v1/images/edits", ciKey, "application/json", []byte(`{"prompt":"x"}`), 415, "invalid_request", ""},
		{"edits no image", "/v1/images/edits", ciKey, ctNoImage, noImage, 400, "invalid_request", "image"},
		{"edits not an image", "/v1/images/edits", ciKey, ctNotImage, notImage, 400, "invalid_request", "image"},
		{"edits mask", "/v1/images/edits", ciKey, ctMask, mask, 400, "invalid_request", "mask"},
		{"edits truncated", "/v1/images/edits", ciKey, ctEdit, okEdit[:len(okEdit)-10], 400, "invalid_request", "image"},
	} {
		rid := "trace-" + strings.ReplaceAll(tc.name, " ", "-")
		r := send(t, "POST", ts.url+tc.path, tc.key, tc.ctype, tc.body, "x-request-id", rid)
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, r, tc.status, "invalid_request_error", tc.code, tc.param)
			route := "images"
			if strings.Contains(tc.path, "edits") {
				route = "images_edits"
			}
			if l := ts.requestLine(t, rid); l["route"] != route || l["status"] != int64(tc.status) || l["error_code"] != tc.code {
				t.Errorf("log line %v", l)
			}
		})
	}
	if n := ts.up.Requests(); n != 0 {
		t.Errorf("%d bad requests reached the upstream", n)
	}
}

// TestImagesUpstreamFailureIsAnEnvelope: an upstream that answers garbage
// fails the Images request with 502 upstream_error, logged with the
// error and counted as a failed request.
func TestImagesUpstreamFailureIsAnEnvelope(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetFault(fakeup.Fault{Garbage: true})
	r := ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"x"}`, "x-request-id", "trace-img-fail")
	wantError(t, r, 502, "server_error", "upstream_error", "")
	l := ts.requestLine(t, "trace-img-fail")
	if e, _ := l["error"].(string); e == "" || l["status"] != int64(502) || l["route"] != "images" {
		t.Errorf("log line %v", l)
	}
	if u := ts.usageOf(t, ciKey); u.Key.Requests != 0 || u.Key.Failed != 1 {
		t.Errorf("usage %+v", u.Key)
	}
}

// TestImagesRefusalIsAContentPolicyError: an upstream that answers text
// without the image is a 400 content_policy_violation.
func TestImagesRefusalIsAContentPolicyError(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini})
	ts.up.SetOutcome(fakeup.OutcomeImageSafety)
	r := ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"x"}`)
	wantError(t, r, 400, "invalid_request_error", "content_policy_violation", "")
	ts.up.SetOutcome(fakeup.OutcomeImage)
	r = ts.postJSON(t, "/v1/images/generations", ciKey, `{"prompt":"x"}`)
	var a imagesAnswer
	decode(t, r, &a)
	if r.status != 200 || len(a.Data) != 1 || a.Data[0].B64JSON == nil {
		t.Errorf("Gemini answer: %d %.300s", r.status, r.body)
	}
}
