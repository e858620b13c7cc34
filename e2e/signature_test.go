package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
	"nanogate/internal/redistest"
)

// Thought signatures: Google's 3.x image models sign the images they draw
// and need the signature back with the image on the next turn. The client
// never sees it; it only sends back the message it got.

const sigModel = "gemini-3-pro-image"

type sigEnv struct {
	*env
	google *fakeup.Server
}

// startSigEnv runs a gateway in front of a fake Google whose image parts
// carry signatures. offload turns image links on; redisAddr, when set, keeps
// the signatures in Redis.
func startSigEnv(t *testing.T, format string, offload bool, redisAddr string) *sigEnv {
	t.Helper()
	google := startFake(t, fakeup.Options{Kind: fakeup.Gemini, Key: googleKey, Models: []string{sigModel},
		ImageSize: 20 << 10, Images: 2, ThoughtSignatures: true})
	images := "  format: " + format + "\n"
	if offload {
		images += fmt.Sprintf("  offload:\n    enabled: true\n    store: filesystem\n    dir: %s\n    ttl: 2h\n"+
			"    signing_key: ${SIGNING_KEY}\n", filepath.Join(t.TempDir(), "images"))
	}
	redis := ""
	if redisAddr != "" {
		redis = fmt.Sprintf("redis: { addrs: [%q], key_prefix: \"e2e:\" }\n", redisAddr)
	}
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  public_url: "http://{{ADDR}}"
  max_body_bytes: 16777216
log: { level: info, format: json }
%sproviders:
  - name: google
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models: { %s: %s }
    price: { per_image: 0.134 }
    timeout: 10s
routing: { max_attempts: 1, health: { failure_threshold: 100 } }
images:
%skeys:
  - name: ci
    key: ${CLIENT_KEY}
`, redis, google.URL(), sigModel, sigModel, images)
	gw := gwtest.Start(t, cfg, "GOOGLE_KEY="+googleKey, "CLIENT_KEY="+clientKey, "SIGNING_KEY="+signingKey)
	return &sigEnv{env: &env{gw: gw}, google: google}
}

// firstTurn asks for two images and returns the assistant message as the
// client got it (raw JSON) and the signatures Google put on the images.
func (e *sigEnv) firstTurn(t *testing.T) (json.RawMessage, []string) {
	t.Helper()
	resp := e.post(t, `{"model":"`+sigModel+`","messages":[{"role":"user","content":"draw two comic panels"}]}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("first turn: %d %.300s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "thoughtSignature") || strings.Contains(string(body), e.google.LastSignatures()[0]) {
		t.Fatal("the signature reached the client")
	}
	var ans struct {
		Choices []struct {
			Message json.RawMessage `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	return ans.Choices[0].Message, e.google.LastSignatures()
}

// secondTurn sends the conversation back with assistant as the model's
// turn and returns what Google received.
func (e *sigEnv) secondTurn(t *testing.T, assistant json.RawMessage) *fakeup.GeminiRequest {
	t.Helper()
	body := `{"model":"` + sigModel + `","messages":[{"role":"user","content":"draw two comic panels"},` +
		string(assistant) + `,{"role":"user","content":"make the second panel blue"}]}`
	resp := e.post(t, body)
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("second turn: %d %.300s", resp.StatusCode, b)
	}
	sent, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	return sent
}

// checkSignedImages checks that the model's turn Google received holds the
// first answer's two images, each with its own signature.
func checkSignedImages(t *testing.T, sent *fakeup.GeminiRequest, sigs []string) {
	t.Helper()
	if len(sent.Contents) != 3 || sent.Contents[1].Role != "model" {
		t.Fatalf("contents: %d, want user, model, user", len(sent.Contents))
	}
	var got []string
	n := 0
	for _, p := range sent.Contents[1].Parts {
		if p.Data == nil {
			if p.ThoughtSignature != "" {
				t.Errorf("signature on a text part %q", p.Text)
			}
			continue
		}
		sameBytes(t, p.Data, fakeup.NthPNG(20<<10, n))
		got = append(got, p.ThoughtSignature)
		n++
	}
	if len(sigs) != 2 || strings.Join(got, ",") != strings.Join(sigs, ",") {
		t.Fatalf("model turn images carry signatures %q, want the first answer's %q", got, sigs)
	}
	for _, c := range []int{0, 2} {
		for _, p := range sent.Contents[c].Parts {
			if p.ThoughtSignature != "" {
				t.Errorf("signature on the user's turn %d", c)
			}
		}
	}
}

func TestSignatureSentBackWithTheImage(t *testing.T) {
	for _, format := range []string{"markdown", "images", "data_url"} {
		t.Run(format, func(t *testing.T) {
			e := startSigEnv(t, format, false, "")
			msg, sigs := e.firstTurn(t)
			checkSignedImages(t, e.secondTurn(t, msg), sigs)
		})
	}
}

// TestSignatureSentBackWithOffloadedLinks: the client got links; the
// signatures were kept in Redis, by image and by link, for the links' ttl.
func TestSignatureSentBackWithOffloadedLinks(t *testing.T) {
	rs := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	for _, format := range []string{"markdown", "images", "data_url"} {
		t.Run(format, func(t *testing.T) {
			rc.FlushAll(context.Background())
			e := startSigEnv(t, format, true, rs.Addr)
			msg, sigs := e.firstTurn(t)
			if strings.Contains(string(msg), "base64,") || !strings.Contains(string(msg), "/images/") {
				t.Fatalf("the answer does not carry links: %.300s", msg)
			}
			keys, err := rc.Keys(context.Background(), "e2e:sig:*").Result()
			if err != nil || len(keys) != 4 {
				t.Fatalf("redis keys %q %v: want a digest and a link id for each of 2 images", keys, err)
			}
			for _, k := range keys {
				ttl := rc.PTTL(context.Background(), k).Val()
				if ttl <= 110*time.Minute || ttl > 2*time.Hour {
					t.Errorf("%s expires in %v, want the links' 2h", k, ttl)
				}
			}
			checkSignedImages(t, e.secondTurn(t, msg), sigs)
		})
	}
}

func TestSignatureSentBackAfterStream(t *testing.T) {
	e := startSigEnv(t, "markdown", false, "")
	resp := e.post(t, `{"model":"`+sigModel+`","stream":true,"messages":[{"role":"user","content":"draw two comic panels"}]}`)
	var content strings.Builder
	for _, ev := range sseEvents(t, resp) {
		if ev == "[DONE]" {
			break
		}
		var ch chunk
		json.Unmarshal([]byte(ev), &ch)
		for _, c := range ch.Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	sigs := e.google.LastSignatures()
	msg, _ := json.Marshal(map[string]string{"role": "assistant", "content": content.String()})
	checkSignedImages(t, e.secondTurn(t, msg), sigs)
}

// TestSignatureOnlyForTheModelsImages: an image the model drew, sent back
// in a user message, goes as the user's image; a later answer's signature
// replaces an earlier one for the same image.
func TestSignatureOnlyForTheModelsImages(t *testing.T) {
	e := startSigEnv(t, "images", false, "")
	msg, _ := e.firstTurn(t)
	var m struct {
		Images []json.RawMessage `json:"images"`
	}
	json.Unmarshal(msg, &m)
	body := `{"model":"` + sigModel + `","messages":[{"role":"user","content":[{"type":"text","text":"edit this"},` +
		string(m.Images[0]) + `]}]}`
	resp := e.post(t, body)
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("%d %.300s", resp.StatusCode, b)
	}
	if strings.Contains(string(e.google.LastBody()), "thoughtSignature") {
		t.Fatal("a signature went on the user's image")
	}
	// The same images drawn again: the newer signatures are the ones sent.
	_, newer := e.firstTurn(t)
	checkSignedImages(t, e.secondTurn(t, msg), newer)
}

// TestSignatureStoreDownFailsOpen: with Redis gone the answers still come,
// the next turn goes without signatures, and the failure is logged once
// without the signature.
func TestSignatureStoreDownFailsOpen(t *testing.T) {
	rs := redistest.Start(t)
	e := startSigEnv(t, "images", false, rs.Addr)
	rs.Kill()
	msg, sigs := e.firstTurn(t)
	sent := e.secondTurn(t, msg)
	for _, p := range sent.Contents[1].Parts {
		if p.ThoughtSignature != "" {
			t.Fatal("a signature appeared from a store that is down")
		}
	}
	// Both turns' lines are out, and what they logged before them.
	waitRequestLines(t, e.gw, 2)
	logs := waitLog(t, e.gw, "thought signature store failed")
	if n := strings.Count(logs, "thought signature store failed"); n != 1 {
		t.Errorf("store failure logged %d times, want once", n)
	}
	if strings.Contains(logs, sigs[0]) {
		t.Fatal("a signature was logged")
	}
}
