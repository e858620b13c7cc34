package compat

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// env is where scripts/compat.sh started the gateway and the fakes.
var env struct {
	baseURL, key, control, modelBoth string
	modelPro, proKey                 string // Gemini 3 Pro Image (gemini only) and the key only its billing case uses
	restrictedKey                    string // may use modelBoth only
	limitedKey                       string // 1 request per minute
	refillKey                        string // refillRPM requests per minute: an empty bucket refills soon
	meteredKey                       string // meteredRPM and meteredTPM, never reached by the suite
	maxAttempts                      int
	refillRPM, meteredRPM            int
	meteredTPM                       int
	adminKey                         string // the gateway's admin_key, for the admin API of keys
}

// kind is an upstream kind: the fake that serves it, the provider name the gateway reports, and the public
// model only this kind maps.
type kind struct {
	name, server, provider, model string
}

var kinds []kind

func TestMain(m *testing.M) {
	missing := false
	need := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			fmt.Fprintf(os.Stderr, "%s is not set: run the suite with scripts/compat.sh go (it starts the gateway and the fakes)\n", name)
			missing = true
		}
		return v
	}
	env.baseURL = need("NANOGATE_COMPAT_BASE_URL")
	env.key = need("NANOGATE_COMPAT_KEY")
	env.restrictedKey = need("NANOGATE_COMPAT_RESTRICTED_KEY")
	env.limitedKey = need("NANOGATE_COMPAT_LIMITED_KEY")
	env.refillKey = need("NANOGATE_COMPAT_REFILL_KEY")
	env.meteredKey = need("NANOGATE_COMPAT_METERED_KEY")
	fmt.Sscan(need("NANOGATE_COMPAT_REFILL_RPM"), &env.refillRPM)
	fmt.Sscan(need("NANOGATE_COMPAT_METERED_RPM"), &env.meteredRPM)
	fmt.Sscan(need("NANOGATE_COMPAT_METERED_TPM"), &env.meteredTPM)
	env.control = need("NANOGATE_COMPAT_CONTROL")
	env.modelBoth = need("NANOGATE_COMPAT_MODEL_BOTH")
	env.modelPro = need("NANOGATE_COMPAT_MODEL_PRO")
	env.proKey = need("NANOGATE_COMPAT_PRO_KEY")
	fmt.Sscan(need("NANOGATE_COMPAT_MAX_ATTEMPTS"), &env.maxAttempts)
	env.adminKey = need("NANOGATE_COMPAT_ADMIN_KEY")
	kinds = []kind{
		{"openai", "openai", "reseller", need("NANOGATE_COMPAT_MODEL_OPENAI")},
		{"gemini", "gemini", "google", need("NANOGATE_COMPAT_MODEL_GEMINI")},
	}
	if missing {
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// newClient is what the README tells users to write: the base URL and the key, nothing else; extra holds the
// SDK options a case needs (timeouts, retries).
func newClient(key string, extra ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(env.baseURL), option.WithAPIKey(key)}, extra...)...)
}

// forEachKind runs fn as subtest [kind] for each upstream kind, from clean fakes (no fault, zero counters),
// leaving them clean.
func forEachKind(t *testing.T, fn func(t *testing.T, k kind)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			cleanFakes(t)
			fn(t, k)
		})
	}
}

func kindNamed(name string) kind {
	for _, k := range kinds {
		if k.name == name {
			return k
		}
	}
	panic("no kind " + name)
}

// cleanFakes resets the fakes now and when t ends.
func cleanFakes(t *testing.T) {
	t.Helper()
	reset(t)
	t.Cleanup(func() { reset(t) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

var prompt = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("draw a nano banana")}

// ---- fakeup's control API (internal/fakeup/cmd/fakeup) ----

func control(t *testing.T, method, path string, body any) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, env.control+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("fakeup control %s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode >= 300 {
		t.Fatalf("fakeup control %s %s: %d %s %v", method, path, res.StatusCode, out, err)
	}
	return out
}

func reset(t *testing.T) { control(t, "POST", "/reset", nil) }

// setFault sets a fault (fakeup.Fault in snake_case) on server, or on both when server is "".
func setFault(t *testing.T, server string, fault map[string]any) {
	control(t, "POST", "/fault"+serverQuery("?", server), fault)
}

func setLatency(t *testing.T, server, d string) {
	control(t, "POST", "/latency?d="+d+serverQuery("&", server), nil)
}

func setImageSize(t *testing.T, server string, bytes int) {
	control(t, "POST", fmt.Sprintf("/image-size?bytes=%d%s", bytes, serverQuery("&", server)), nil)
}

func serverQuery(sep, server string) string {
	if server == "" {
		return ""
	}
	return sep + "server=" + server
}

type fakeStats struct {
	Requests, Canceled, Inflight int64
}

func stats(t *testing.T) map[string]fakeStats {
	var out map[string]fakeStats
	if err := json.Unmarshal(control(t, "GET", "/stats", nil), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// lastBody returns the last request body the server's fake received.
func lastBody(t *testing.T, server string) []byte {
	return control(t, "GET", "/last?server="+server, nil)
}

// assertServedOnce checks that exactly one upstream call reached k's fake and none the other.
func assertServedOnce(t *testing.T, k kind) {
	t.Helper()
	for name, s := range stats(t) {
		want := int64(0)
		if name == k.server {
			want = 1
		}
		if s.Requests != want {
			t.Errorf("upstream calls to the %s fake = %d, want %d", name, s.Requests, want)
		}
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- images ----

// inputPNGs are two input images for editing: fixtures/tiny.png (2x2 red, green / blue, yellow) and a 2x2
// grey checkerboard.
var inputPNGs = []string{
	"iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFElEQVR42mP4z8DAAMIM////ZwAAHu8E/HMcU8wAAAAASUVORK5CYII=",
	"iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAAAAABX3VL4AAAADElEQVR42mNg+A+EAAYAAf+tLDclAAAAAElFTkSuQmCC",
}

var mdImage = regexp.MustCompile(`!\[[^\]]*\]\((data:image/png;base64,[A-Za-z0-9+/=]+)\)`)

// markdownImages returns the data URLs of the markdown images in content.
func markdownImages(content string) []string {
	var out []string
	for _, m := range mdImage.FindAllStringSubmatch(content, -1) {
		out = append(out, m[1])
	}
	return out
}

// assertPNG decodes a data URL and checks that it is a PNG (assertPNGBytes). It returns the bytes.
func assertPNG(t *testing.T, dataURL string) []byte {
	t.Helper()
	b64, ok := strings.CutPrefix(dataURL, "data:image/png;base64,")
	if !ok {
		t.Fatalf("not a PNG data URL: %.60q", dataURL)
	}
	return assertB64PNG(t, b64)
}

// assertB64PNG decodes standard base64 (an images response's b64_json) and checks that it is a PNG.
func assertB64PNG(t *testing.T, b64 string) []byte {
	t.Helper()
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("base64: %v", err)
	}
	assertPNGBytes(t, png)
	return png
}

// assertPNGBytes checks that png is a PNG: the signature, then an IHDR chunk of 13 bytes with a non-zero size
// and a valid CRC.
func assertPNGBytes(t *testing.T, png []byte) {
	t.Helper()
	if len(png) < 33 || !bytes.Equal(png[:8], []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("no PNG signature: % x", png[:min(len(png), 8)])
	}
	if binary.BigEndian.Uint32(png[8:]) != 13 || string(png[12:16]) != "IHDR" {
		t.Fatalf("the first chunk is not a 13-byte IHDR: % x", png[8:16])
	}
	if w, h := binary.BigEndian.Uint32(png[16:]), binary.BigEndian.Uint32(png[20:]); w == 0 || h == 0 {
		t.Fatalf("IHDR size %dx%d", w, h)
	}
	if binary.BigEndian.Uint32(png[29:]) != crc32.ChecksumIEEE(png[12:29]) {
		t.Fatal("IHDR CRC mismatch")
	}
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// makePNG encodes a w x h PNG of deterministic noise (seeded), so that it does not compress: about 4 x w x h
// bytes, large enough to cross many buffers of a multipart upload.
func makePNG(t *testing.T, w, h int, seed uint32) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	x := seed | 1
	for i := range img.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = byte(x)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// oneImage checks that content holds exactly one markdown PNG and returns its bytes.
func oneImage(t *testing.T, content string) []byte {
	t.Helper()
	urls := markdownImages(content)
	if len(urls) != 1 {
		t.Fatalf("%d markdown images in %.200q, want 1", len(urls), content)
	}
	return assertPNG(t, urls[0])
}

// imageTokens reads usage.completion_tokens_details.image_tokens: not a field of the SDK's type (OpenAI's
// own models do not send it), so it comes from the SDK's ExtraFields, as a Go user reads it.
func imageTokens(t *testing.T, u openai.CompletionUsage) int {
	t.Helper()
	f, ok := u.CompletionTokensDetails.JSON.ExtraFields["image_tokens"]
	if !ok {
		t.Fatalf("no image_tokens in usage %s", u.RawJSON())
	}
	var n int
	if err := json.Unmarshal([]byte(f.Raw()), &n); err != nil {
		t.Fatalf("image_tokens %q: %v", f.Raw(), err)
	}
	return n
}

// geminiInlineImages returns the base64 of the inline images of a generateContent body, in order, whichever
// JSON spelling the gateway used (inlineData or inline_data).
func geminiInlineImages(t *testing.T, body []byte) []string {
	type blob struct{ Data string }
	var req struct {
		Contents []struct {
			Parts []struct {
				InlineData  *blob `json:"inlineData"`
				InlineData2 *blob `json:"inline_data"`
			}
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("the Gemini fake's last body: %v", err)
	}
	var out []string
	for _, c := range req.Contents {
		for _, p := range c.Parts {
			if d := cmp.Or(p.InlineData, p.InlineData2); d != nil {
				out = append(out, d.Data)
			}
		}
	}
	return out
}

// resellerImageURLs returns the image_url URLs of an OpenAI chat body, in order.
func resellerImageURLs(t *testing.T, body []byte) []string {
	var req struct {
		Messages []struct {
			Content json.RawMessage
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("the reseller fake's last body: %v", err)
	}
	var out []string
	for _, m := range req.Messages {
		var parts []struct {
			Type     string
			ImageURL struct{ URL string } `json:"image_url"`
		}
		if json.Unmarshal(m.Content, &parts) != nil {
			continue // a string content
		}
		for _, p := range parts {
			if p.Type == "image_url" {
				out = append(out, p.ImageURL.URL)
			}
		}
	}
	return out
}
