package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
)

const (
	signingKey = "e2e-signing-key-0123456789abcdef0123456789"
	linkKey    = "sk-e2e-offload-off-key-4444"
)

// offEnv is a gateway with image links on, in front of the fake Google (tried
// first) and a fake reseller.
type offEnv struct {
	*env
	google, reseller *fakeup.Server
	dir              string
}

func startOffloadEnv(t *testing.T, imagesYAML string) *offEnv {
	t.Helper()
	google := startFake(t, fakeup.Options{Kind: fakeup.Gemini, Key: googleKey})
	reseller := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: resellerKey})
	dir := filepath.Join(t.TempDir(), "images")
	if imagesYAML == "" {
		imagesYAML = fmt.Sprintf(`
  format: markdown
  offload:
    enabled: true
    store: filesystem
    dir: %s
    ttl: 1h
    signing_key: ${SIGNING_KEY}`, dir)
	}
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  public_url: "http://{{ADDR}}"
log: { level: info, format: json }
providers:
  - name: google
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models: { %s: gemini-2.5-flash-image }
    prices: { %[2]s: { per_image: 0.030 } }
  - name: reseller
    kind: openai
    base_url: %s
    api_key: ${RESELLER_KEY}
    models: { %s: upstream-model-b, reseller-only: upstream-model-b }
    price: { per_image: 0.039 }
routing: { max_attempts: 3, health: { failure_threshold: 100 } }
images:%s
keys:
  - name: ci
    key: ${CLIENT_KEY}
  - name: inline
    key: ${LINK_KEY}
    offload_images: false
`, google.URL(), model, reseller.URL(), model, imagesYAML)
	gw := gwtest.Start(t, cfg, "GOOGLE_KEY="+googleKey, "RESELLER_KEY="+resellerKey, "CLIENT_KEY="+clientKey,
		"LINK_KEY="+linkKey, "SIGNING_KEY="+signingKey)
	return &offEnv{env: &env{gw: gw}, google: google, reseller: reseller, dir: dir}
}

var mdLink = regexp.MustCompile(`!\[image\]\((http://[^)\s]+/images/[^)\s]+)\)`)

func fetch(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestOffloadReturnsLinksToExactBytes(t *testing.T) {
	e := startOffloadEnv(t, "")
	e.google.SetImageSize(1500 << 10)
	resp := e.post(t, chatBody(""))
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("%d: %.300s", resp.StatusCode, body)
	}
	if len(body) > 4096 {
		t.Errorf("answer is %d bytes: the image was not replaced by a link", len(body))
	}
	var c completion
	json.Unmarshal(body, &c)
	m := mdLink.FindStringSubmatch(c.Choices[0].Message.Content)
	if m == nil {
		t.Fatalf("no image link in %q", c.Choices[0].Message.Content)
	}
	code, img := fetch(t, m[1])
	if code != 200 {
		t.Fatalf("GET link: %d %s", code, img)
	}
	sameBytes(t, img, fakeup.PNG(1500<<10))
	if c.Usage.CompletionTokensDetails.ImageTokens != 1290 {
		t.Errorf("usage %+v", c.Usage)
	}
	// A tampered link is refused.
	if code, _ := fetch(t, strings.Replace(m[1], "sig=", "sig=0", 1)); code != 403 {
		t.Errorf("tampered link: %d, want 403", code)
	}
}

func TestOffloadPerKeySwitchAndFormats(t *testing.T) {
	e := startOffloadEnv(t, "")
	var c completion
	json.Unmarshal(readAll(t, e.post(t, chatBody(""), "Authorization", "Bearer "+linkKey)), &c)
	if !strings.Contains(c.Choices[0].Message.Content, "data:image/png;base64,") {
		t.Errorf("key with offload_images: false got no inline image: %.100q", c.Choices[0].Message.Content)
	}
	c = completion{}
	json.Unmarshal(readAll(t, e.post(t, chatBody(""), "x-nanogate-image-format", "images")), &c)
	if len(c.Choices[0].Message.Images) != 1 || !strings.Contains(c.Choices[0].Message.Images[0].ImageURL.URL, "/images/") {
		t.Errorf("images format: %+v", c.Choices[0].Message.Images)
	}
	c = completion{}
	json.Unmarshal(readAll(t, e.post(t, chatBody(""), "x-nanogate-image-format", "data_url")), &c)
	if !strings.HasPrefix(c.Choices[0].Message.Content, "http://") {
		t.Errorf("data_url format with offload: content %q", c.Choices[0].Message.Content)
	}
}

func TestOffloadStreamCarriesLink(t *testing.T) {
	e := startOffloadEnv(t, "")
	e.google.SetImageSize(300 << 10)
	events := sseEvents(t, e.post(t, chatBody(`,"stream":true`)))
	var content strings.Builder
	for _, ev := range events {
		if ev == "[DONE]" {
			break
		}
		var ch chunk
		json.Unmarshal([]byte(ev), &ch)
		for _, c := range ch.Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	m := mdLink.FindStringSubmatch(content.String())
	if m == nil || strings.Contains(content.String(), "base64,") {
		t.Fatalf("stream content has no link or still has base64: %.200q", content.String())
	}
	_, img := fetch(t, m[1])
	sameBytes(t, img, fakeup.PNG(300<<10))
}

// TestLinkSentBackAsInput: multi-turn editing with links. The link is read
// from the store: Google receives the image bytes as inlineData, and the
// reseller receives a data URL, not the link.
func TestLinkSentBackAsInput(t *testing.T) {
	e := startOffloadEnv(t, "")
	var c completion
	json.Unmarshal(readAll(t, e.post(t, chatBody(""))), &c)
	link := mdLink.FindStringSubmatch(c.Choices[0].Message.Content)[1]
	body := `{"model":"` + model + `","messages":[{"role":"user","content":[{"type":"text","text":"make it blue"},` +
		`{"type":"image_url","image_url":{"url":"` + link + `"}}]}]}`
	resp := e.post(t, body)
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	req, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, ct := range req.Contents {
		for _, p := range ct.Parts {
			if p.Data != nil {
				got = p.Data
			}
		}
	}
	sameBytes(t, got, fakeup.PNG(0))
	// The reseller gets the data too.
	resp = e.post(t, strings.Replace(body, model, "reseller-only", 1))
	readAll(t, resp)
	sent := string(e.reseller.LastBody())
	if strings.Contains(sent, "/images/") || !strings.Contains(sent, base64.StdEncoding.EncodeToString(fakeup.PNG(0))) {
		t.Fatalf("reseller did not receive the image data: %.300s", sent)
	}
	// An expired or tampered link of ours is a 400 before any upstream call.
	before := e.google.Requests()
	expectError(t, e.post(t, strings.Replace(body, "sig=", "sig=00", 1)), 400, "invalid_request")
	if e.google.Requests() != before {
		t.Fatal("a bad link reached the upstream")
	}
}

// TestOffloadFailureFallsBackInline: a store that cannot be reached never
// costs the client its image.
func TestOffloadFailureFallsBackInline(t *testing.T) {
	dead := gwtest.FreeAddr(t)
	e := startOffloadEnv(t, fmt.Sprintf(`
  format: markdown
  offload:
    enabled: true
    store: s3
    ttl: 1h
    s3: { endpoint: "%s", region: us-east-1, bucket: nope, access_key: AKIAE2E, secret_key: e2e-s3-secret-key, use_ssl: false }`, dead))
	resp := e.post(t, chatBody(""))
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "data:image/png;base64,") {
		t.Fatalf("%d: %.300s", resp.StatusCode, body)
	}
	waitLog(t, e.gw, "image offload failed")
	waitRequestLine(t, e.gw, resp)
	if strings.Contains(e.gw.Logs(), "e2e-s3-secret-key") {
		t.Fatal("the S3 secret was logged")
	}
}
