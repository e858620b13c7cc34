package provider

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
	"nanogate/internal/jsonx"
)

const fixtureSignature = "Cr8BAY89a1+fake+signature+bytes+for+tests+only+Qm9vaw=="

// threeProImage is the first image of response_3pro_interleaved_jpeg.json,
// the one that carries a thoughtSignature.
func threeProImage(t *testing.T) string {
	t.Helper()
	var r struct {
		Candidates []struct {
			Content struct {
				Parts []struct {
					InlineData *struct{ Data string } `json:"inlineData"`
				} `json:"parts"`
			} `json:"content"`
		} `json:"candidates"`
	}
	if err := json.Unmarshal(fakeup.Fixture("gemini/response_3pro_interleaved_jpeg.json"), &r); err != nil {
		t.Fatal(err)
	}
	return r.Candidates[0].Content.Parts[1].InlineData.Data
}

func TestGeminiKeepsThoughtSignatureOfImages(t *testing.T) {
	p := testGemini(t, "", nil)
	res, err := p.parseResult(fakeup.Fixture("gemini/response_3pro_interleaved_jpeg.json"))
	if err != nil {
		t.Fatal(err)
	}
	imgs := res.Choices[0].Images
	if len(imgs) != 2 {
		t.Fatalf("%d images", len(imgs))
	}
	if string(imgs[0].Signature) != fixtureSignature {
		t.Errorf("first image signature %q, want %q", imgs[0].Signature, fixtureSignature)
	}
	if imgs[1].Signature != nil {
		t.Errorf("second image has signature %q, the fixture gives it none", imgs[1].Signature)
	}
}

func TestGeminiStreamKeepsThoughtSignatureOfImages(t *testing.T) {
	p := testGemini(t, "", nil)
	img := threeProImage(t)
	ev := func(s string) string { return "data: " + s + "\r\n\r\n" }
	body := ev(`{"candidates": [{"content": {"parts": [{"text": "Here is the first panel."}],"role": "model"},"index": 0}]}`) +
		ev(`{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/jpeg","data": "`+img+`"},"thoughtSignature": "`+fixtureSignature+`"}],"role": "model"},"index": 0}]}`) +
		ev(`{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/jpeg","data": "`+img+`"}}],"role": "model"},"finishReason": "STOP","index": 0}]}`)
	s := readerStream(p, []byte(body))
	defer s.Close()
	var sigs []string
	for {
		e, err := s.Next()
		if err != nil {
			break
		}
		if e.Image != nil {
			sigs = append(sigs, string(e.Image.Signature))
		}
	}
	if !reflect.DeepEqual(sigs, []string{fixtureSignature, ""}) {
		t.Fatalf("image signatures %q", sigs)
	}
}

// TestGeminiDropsUnusableSignature: a signature that could not be sent back
// as it is costs the answer nothing.
func TestGeminiDropsUnusableSignature(t *testing.T) {
	p := testGemini(t, "", nil)
	img := threeProImage(t)
	for name, sig := range map[string]string{
		"not base64": "not base64 at all!",
		"too large":  strings.Repeat("QUJD", maxThoughtSignature/4+1),
		"not text":   "",
	} {
		t.Run(name, func(t *testing.T) {
			v := `"` + sig + `"`
			if sig == "" {
				v = "42"
			}
			body := `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/jpeg","data":"` + img +
				`"},"thoughtSignature":` + v + `}],"role":"model"},"finishReason":"STOP","index":0}]}`
			res, err := p.parseResult([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Choices[0].Images; len(got) != 1 || got[0].Signature != nil {
				t.Fatalf("images %d, signature %q", len(got), got[0].Signature)
			}
		})
	}
	// An escaped slash is still the same signature.
	body := `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/jpeg","data":"` + img +
		`"},"thoughtSignature":"ab\/c"}],"role":"model"},"finishReason":"STOP","index":0}]}`
	res, err := p.parseResult([]byte(body))
	if err != nil || string(res.Choices[0].Images[0].Signature) != "ab/c" {
		t.Fatalf("escaped signature: %v %q", err, res.Choices[0].Images[0].Signature)
	}
}

func TestImageDigestIsOfDecodedBytes(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdefghij"), 20000) // several decode chunks
	for _, n := range []int{1, 2, 3, 100, len(data)} {
		d, ok := ImageDigest([]byte(base64.StdEncoding.EncodeToString(data[:n])))
		if !ok || d != sha256.Sum256(data[:n]) {
			t.Errorf("%d bytes: digest %x ok %v", n, d, ok)
		}
	}
	for _, bad := range []string{"QUJ", "QU!D", ""} {
		if _, ok := ImageDigest([]byte(bad)); ok && bad != "" {
			t.Errorf("%q accepted", bad)
		}
	}
}

// secondTurn is request_second_turn_with_signature.json as an OpenAI chat
// request, the first answer's image sent back the way each format shows it.
func secondTurn(t *testing.T, format string) []byte {
	t.Helper()
	url := "data:image/jpeg;base64," + threeProImage(t)
	var assistant string
	switch format {
	case "markdown":
		assistant = `{"role":"assistant","content":"Here is the first panel.\n\n![image](` + url + `)"}`
	case "images":
		assistant = `{"role":"assistant","content":"","images":[{"type":"image_url","image_url":{"url":"` + url + `"}}]}`
	case "data_url":
		assistant = `{"role":"assistant","content":"` + url + `"}`
	case "parts":
		assistant = `{"role":"assistant","content":[{"type":"image_url","image_url":{"url":"` + url + `"}}]}`
	}
	return []byte(`{"model":"gemini-3-pro-image","image_config":{"aspect_ratio":"16:9"},"messages":[` +
		`{"role":"user","content":"draw two comic panels"},` + assistant +
		`,{"role":"user","content":"make the second panel blue"}]}`)
}

// contentsOf returns the contents of a generateContent body as generic JSON.
func contentsOf(t *testing.T, body []byte) any {
	t.Helper()
	c, ok := jsonx.Get(body, "contents")
	if !ok {
		t.Fatalf("no contents in %.300s", body)
	}
	var v any
	if err := json.Unmarshal(c, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGeminiRequestSendsSignatureBack(t *testing.T) {
	img, _ := base64.StdEncoding.DecodeString(threeProImage(t))
	want := contentsOf(t, fakeup.Fixture("gemini/request_second_turn_with_signature.json"))
	for _, format := range []string{"images", "data_url", "parts", "markdown"} {
		t.Run(format, func(t *testing.T) {
			req, err := ParseChatRequest(secondTurn(t, format))
			if err != nil {
				t.Fatal(err)
			}
			req.ThoughtSignatures = map[[32]byte][]byte{sha256.Sum256(img): []byte(fixtureSignature)}
			plan, rerr := planGemini(req, "gemini-3-pro-image")
			if rerr != nil {
				t.Fatal(rerr)
			}
			body := appendGeminiBody(nil, req, plan)
			if !json.Valid(body) {
				t.Fatalf("invalid JSON: %.300s", body)
			}
			got := contentsOf(t, body)
			if format == "markdown" {
				// The text of the first answer goes back too, before its image.
				model := want.([]any)[1].(map[string]any)
				w := []any{want.([]any)[0], map[string]any{"role": "model", "parts": append(
					[]any{map[string]any{"text": "Here is the first panel."}}, model["parts"].([]any)...)}, want.([]any)[2]}
				if !reflect.DeepEqual(got, w) {
					t.Fatalf("contents\n got %v\nwant %v", got, w)
				}
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("contents\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestGeminiRequestSignatureOnlyOnTheModelsImages(t *testing.T) {
	p := testGemini(t, "", nil)
	img, _ := base64.StdEncoding.DecodeString(threeProImage(t))
	url := "data:image/jpeg;base64," + threeProImage(t)
	// The same image in a user message, and an assistant image nobody
	// signed.
	body := []byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"edit"},` +
		`{"type":"image_url","image_url":{"url":"` + url + `"}}]},` +
		`{"role":"assistant","content":"data:image/png;base64,` + redB64 + `"},{"role":"user","content":"again"}]}`)
	req, err := ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	req.ThoughtSignatures = map[[32]byte][]byte{sha256.Sum256(img): []byte(fixtureSignature)}
	plan, _ := planGemini(req, "gemini-3-pro-image")
	if out := appendGeminiBody(nil, req, plan); bytes.Contains(out, []byte("thoughtSignature")) {
		t.Fatalf("signature sent on a part the model did not draw: %.200s", out)
	}
	// Without signatures the request is what it always was.
	req.ThoughtSignatures = nil
	with, _ := translate(t, p, secondTurn(t, "images"), "gemini-3-pro-image")
	if bytes.Contains(with, []byte("thoughtSignature")) {
		t.Fatal("signature without a known one")
	}
}
