package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
)

// Wire fidelity: what real clients of OpenAI's SDKs and chat UIs read of an
// answer, checked through the real binary against recorded upstream answers.

// fullUsage is usage with the details the tests here read.
type fullUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	PromptTokensDetails *struct {
		CachedTokens *int64 `json:"cached_tokens"`
		ImageTokens  *int64 `json:"image_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ImageTokens int64 `json:"image_tokens"`
	} `json:"completion_tokens_details"`
}

// rawChoices decodes an answer's choices as maps, to see which members are
// present and null.
func rawChoices(t *testing.T, body []byte) []map[string]any {
	t.Helper()
	var v struct {
		Choices []map[string]any `json:"choices"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%v: %.300s", err, body)
	}
	return v.Choices
}

// TestFidelityInterleavedJPEGAnswer: a Gemini 3 Pro Image answer of text,
// image, text, image, whose first JPEG is labelled image/png, reaches the
// client in that order as image/jpeg in markdown and in the images format;
// the prompt's image tokens are reported; and the answer sent back on the
// next turn goes to Google as JPEG, in order.
func TestFidelityInterleavedJPEGAnswer(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetFault(fakeup.Fault{Body: fakeup.Fixture("gemini/response_3pro_interleaved_jpeg.json")})

	resp := e.post(t, chatBody(""))
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google" {
		t.Fatalf("status %d provider %q: %.300s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
	}
	var c struct {
		completion
		Usage fullUsage `json:"usage"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	content := c.Choices[0].Message.Content
	imgs := mdImage.FindAllStringSubmatch(content, -1)
	if len(imgs) != 2 {
		t.Fatalf("%d markdown images in %.200q", len(imgs), content)
	}
	url0 := "data:" + imgs[0][1] + ";base64," + imgs[0][2]
	url1 := "data:" + imgs[1][1] + ";base64," + imgs[1][2]
	want := "Here is the first panel.\n\n![image](" + url0 + ")\n\nAnd the second panel.\n\n![image](" + url1 + ")"
	if content != want {
		t.Errorf("content out of order:\n%.400q\nwant\n%.400q", content, want)
	}
	for i, m := range imgs {
		if m[1] != "image/jpeg" {
			t.Errorf("image %d is %s, want image/jpeg (its bytes)", i, m[1])
		}
		if raw, _ := base64.StdEncoding.DecodeString(m[2]); !bytes.HasPrefix(raw, []byte{0xff, 0xd8, 0xff}) {
			t.Errorf("image %d is not the JPEG", i)
		}
	}
	d := c.Usage.PromptTokensDetails
	if d == nil || d.ImageTokens == nil || *d.ImageTokens != 560 || d.CachedTokens == nil || *d.CachedTokens != 0 {
		t.Errorf("prompt_tokens_details %+v (prompt %d), want image_tokens 560", d, c.Usage.PromptTokens)
	}
	ch := rawChoices(t, body)[0]
	if v, ok := ch["logprobs"]; !ok || v != nil {
		t.Errorf("logprobs %v (present %v)", v, ok)
	}
	if v, ok := ch["message"].(map[string]any)["refusal"]; !ok || v != nil {
		t.Errorf("refusal %v (present %v)", v, ok)
	}

	// The images format: the text joined, the images in order.
	resp = e.post(t, chatBody(""), "x-nanogate-image-format", "images")
	var ci completion
	if err := json.Unmarshal(readAll(t, resp), &ci); err != nil {
		t.Fatal(err)
	}
	msg := ci.Choices[0].Message
	if msg.Content != "Here is the first panel.\n\nAnd the second panel." || len(msg.Images) != 2 ||
		msg.Images[0].ImageURL.URL != url0 || msg.Images[1].ImageURL.URL != url1 {
		t.Errorf("images format: content %q, %d images", msg.Content, len(msg.Images))
	}

	// Next turn: the answer goes back as the client got it, and its first
	// image once more as a user image labelled image/png, as clients that
	// trust the old label send it.
	e.google.ClearFault()
	e.google.Reset()
	asst, _ := json.Marshal(content)
	jpegAsPNG := "data:image/png;base64," + imgs[0][2]
	turn2 := `{"model":"` + model + `","messages":[{"role":"user","content":"two panels"},{"role":"assistant","content":` + string(asst) +
		`},{"role":"user","content":[{"type":"text","text":"make the second like this"},{"type":"image_url","image_url":{"url":"` + jpegAsPNG + `"}}]}]}`
	resp = e.post(t, turn2)
	if out := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("second turn: %d %.300s", resp.StatusCode, out)
	}
	sent, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	if len(sent.Contents) != 3 || sent.Contents[1].Role != "model" {
		t.Fatalf("contents %+v", sent.Contents)
	}
	var kinds []string
	for _, p := range sent.Contents[1].Parts {
		if p.MimeType != "" {
			kinds = append(kinds, p.MimeType)
		} else {
			kinds = append(kinds, "text:"+p.Text)
		}
	}
	if strings.Join(kinds, "|") != "text:Here is the first panel.|image/jpeg|text:And the second panel.|image/jpeg" {
		t.Errorf("model turn sent back as %v", kinds)
	}
	user := sent.Contents[2].Parts
	if len(user) != 2 || user[1].MimeType != "image/jpeg" || !bytes.HasPrefix(user[1].Data, []byte{0xff, 0xd8, 0xff}) {
		t.Errorf("user image sent as %q", user[len(user)-1].MimeType)
	}
}

// TestFidelityInputImageTypes: image/jpg is JPEG; a label the bytes
// contradict is corrected before Google sees it; GIF is refused before any
// upstream call, with the image's param named.
func TestFidelityInputImageTypes(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	png := base64.StdEncoding.EncodeToString(fakeup.Fixture("tiny.png"))
	send := func(mime, b64 string) *http.Response {
		return e.post(t, `{"model":"`+model+`","messages":[{"role":"user","content":[{"type":"text","text":"edit"},`+
			`{"type":"image_url","image_url":{"url":"data:`+mime+`;base64,`+b64+`"}}]}]}`)
	}
	for _, label := range []string{"image/jpg", "image/jpeg", "image/gif"} {
		// PNG bytes under a wrong label: sent as what they are.
		if resp := send(label, png); resp.StatusCode != 200 {
			t.Fatalf("%s over PNG bytes: %d %.200s", label, resp.StatusCode, readAll(t, resp))
		} else {
			readAll(t, resp)
		}
		sent, err := fakeup.ParseGeminiRequest(e.google.LastBody())
		if err != nil {
			t.Fatal(err)
		}
		if p := sent.Contents[0].Parts; len(p) != 2 || p[1].MimeType != "image/png" {
			t.Errorf("%s over PNG bytes went upstream as %+v", label, p)
		}
	}
	jpeg := base64.StdEncoding.EncodeToString([]byte{0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 'J', 'F', 0xff, 0xc0, 0x00, 0x11, 0x08,
		0, 16, 0, 16, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1})
	readAll(t, send("image/jpg", jpeg))
	if sent, err := fakeup.ParseGeminiRequest(e.google.LastBody()); err != nil || sent.Contents[0].Parts[1].MimeType != "image/jpeg" {
		t.Errorf("image/jpg went upstream as %+v (%v)", sent, err)
	}

	before := e.google.Requests() + e.reseller.Requests()
	gif := base64.StdEncoding.EncodeToString([]byte("GIF89a\x02\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04"))
	for _, label := range []string{"image/gif", "image/png"} {
		env := expectError(t, send(label, gif), 400, "invalid_request")
		if env.Error.Param == nil || *env.Error.Param != "messages[0].content[1].image_url.url" ||
			!strings.Contains(env.Error.Message, "GIF") || !strings.Contains(env.Error.Message, "messages[0].content[1].image_url.url") {
			t.Errorf("GIF labelled %s: %+v", label, env.Error)
		}
	}
	if n := e.google.Requests() + e.reseller.Requests() - before; n != 0 {
		t.Errorf("%d upstream calls for refused GIFs", n)
	}
}

// TestFidelityHostedLinkIsAnImage: a reseller answer holding a hosted
// https:// image in markdown counts as an image, billed like one, and the
// link reaches the client as it is.
func TestFidelityHostedLinkIsAnImage(t *testing.T) {
	e := startEnv(t, opts{})
	const link = "https://cdn.reseller.example/img/7f3a.png?sig=abc&exp=1900000000"
	answer := `{"id":"chatcmpl-h","object":"chat.completion","created":1767225600,"model":"upstream-model-a","choices":[{"index":0,` +
		`"message":{"role":"assistant","content":"Here it is.\n\n![image](https:\/\/cdn.reseller.example\/img\/7f3a.png?sig=abc\u0026exp=1900000000)"},` +
		`"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":1298,"total_tokens":1310}}`
	e.cheap.SetFault(fakeup.Fault{Body: []byte(answer)})
	resp := e.post(t, chatBody(""))
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %.300s", resp.StatusCode, body)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if got := c.Choices[0].Message.Content; got != "Here it is.\n\n![image]("+link+")" {
		t.Errorf("content %q", got)
	}
	if c.Usage.CompletionTokensDetails.ImageTokens != 1290 || c.Usage.CompletionTokens != 1298 {
		t.Errorf("usage %+v: the hosted image is not billed", c.Usage)
	}
	waitFor(t, 5*time.Second, "the record of the hosted image", func() bool {
		return e.usage(t).Key.Images == 1
	})
}

// TestFidelityStreamChunks: every chunk choice carries logprobs null, the
// first delta refusal null, and the usage chunk prompt_tokens_details with
// image_tokens.
func TestFidelityStreamChunks(t *testing.T) {
	e := startEnv(t, opts{})
	events := sseEvents(t, e.post(t, chatBody(`,"stream":true,"stream_options":{"include_usage":true}`)))
	sawUsage, choices := false, 0
	for _, ev := range events {
		if ev == "[DONE]" {
			continue
		}
		var ck struct {
			Choices []map[string]any `json:"choices"`
			Usage   *fullUsage       `json:"usage"`
		}
		if err := json.Unmarshal([]byte(ev), &ck); err != nil {
			t.Fatalf("chunk %.200s: %v", ev, err)
		}
		for _, ch := range ck.Choices {
			if v, ok := ch["logprobs"]; !ok || v != nil {
				t.Errorf("chunk choice without logprobs null: %.200s", ev)
			}
			if choices == 0 {
				if v, ok := ch["delta"].(map[string]any)["refusal"]; !ok || v != nil {
					t.Errorf("first delta without refusal null: %.200s", ev)
				}
			}
			choices++
		}
		if ck.Usage != nil {
			sawUsage = true
			if d := ck.Usage.PromptTokensDetails; d == nil || d.ImageTokens == nil || *d.ImageTokens != 0 {
				t.Errorf("usage chunk prompt_tokens_details %+v", d)
			}
		}
	}
	if !sawUsage || choices < 3 {
		t.Errorf("usage chunk %v, %d choice chunks", sawUsage, choices)
	}
}

// TestFidelityTextAnswerHasNoNotice: a question answered in text, cut by
// max_tokens, is the model's text alone: no notice about a missing image is
// injected.
func TestFidelityTextAnswerHasNoNotice(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetFault(fakeup.Fault{Body: []byte(`{"candidates": [{"content": {"parts": [{"text": "A nano banana is small."}],"role": "model"},` +
		`"finishReason": "MAX_TOKENS","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 6,"totalTokenCount": 15}}`)})
	resp := e.post(t, `{"model":"`+model+`","modalities":["text"],"max_tokens":6,"messages":[{"role":"user","content":"what is a nano banana?"}]}`)
	body := readAll(t, resp)
	var c completion
	if err := json.Unmarshal(body, &c); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v %.300s", resp.StatusCode, err, body)
	}
	if ch := c.Choices[0]; ch.Message.Content != "A nano banana is small." || ch.FinishReason != "length" || ch.Message.Refusal != nil {
		t.Errorf("choice %+v", ch)
	}
}

// TestFidelityModelRetrieve: GET /v1/models/{id} answers OpenAI's model
// object for a model the key may use, 404 model_not_found otherwise.
func TestFidelityModelRetrieve(t *testing.T) {
	e := startEnv(t, opts{})
	var m struct {
		ID, Object, OwnedBy string
		Created             *int64
	}
	if code := getJSON(t, e.gw.URL+"/v1/models/"+model, clientKey, &m); code != 200 || m.ID != model || m.Object != "model" || m.Created == nil {
		t.Errorf("%d %+v", code, m)
	}
	for _, tt := range []struct{ id, key string }{{"no-such-model", clientKey}, {model, otherKey}} {
		req, _ := http.NewRequest("GET", e.gw.URL+"/v1/models/"+tt.id, nil)
		req.Header.Set("Authorization", "Bearer "+tt.key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		env := expectError(t, resp, 404, "model_not_found")
		if env.Error.Type != "invalid_request_error" {
			t.Errorf("%s: %+v", tt.id, env.Error)
		}
	}
}
