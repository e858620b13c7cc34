package compat

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

const imagePrompt = "a nano banana dish"

// assertUpstreamCalls checks that n upstream calls reached k's fake and none the other.
func assertUpstreamCalls(t *testing.T, k kind, n int64) {
	t.Helper()
	for name, s := range stats(t) {
		want := int64(0)
		if name == k.server {
			want = n
		}
		if s.Requests != want {
			t.Errorf("upstream calls to the %s fake = %d, want %d", name, s.Requests, want)
		}
	}
}

// b64Image checks that img came as b64_json and is a PNG, and returns its bytes.
func b64Image(t *testing.T, img openai.Image) []byte {
	t.Helper()
	if !img.JSON.B64JSON.Valid() || img.JSON.URL.Valid() {
		t.Fatalf("want b64_json and no url: %.200s", img.RawJSON())
	}
	return assertB64PNG(t, img.B64JSON)
}

func TestImagesGenerateB64TwoImages(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		c := newClient(env.key)
		r, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{
			Model: k.model, Prompt: imagePrompt, N: openai.Int(2),
			ResponseFormat: openai.ImageGenerateParamsResponseFormatB64JSON,
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Created < 1_600_000_000 || len(r.Data) != 2 {
			t.Fatalf("created %d, %d images, want 2", r.Created, len(r.Data))
		}
		for _, img := range r.Data {
			b64Image(t, img)
		}
		// The usage of GPT image models, in the SDK's own type.
		u := r.Usage
		if !u.JSON.OutputTokens.Valid() || u.OutputTokens != 2580 || u.OutputTokensDetails.ImageTokens != 2580 {
			t.Errorf("output_tokens %d, image_tokens %d, want 2580: %s", u.OutputTokens, u.OutputTokensDetails.ImageTokens, u.RawJSON())
		}
		if u.InputTokens <= 0 || u.TotalTokens != u.InputTokens+u.OutputTokens {
			t.Errorf("usage %s", u.RawJSON())
		}
		assertUpstreamCalls(t, k, 2) // Gemini draws one image per call
	})
}

func TestImagesGenerateURLServesTheSameBytes(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		const size = 300_000
		setImageSize(t, k.server, size)
		c := newClient(env.key)
		r, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{
			Model: k.model, Prompt: imagePrompt, ResponseFormat: openai.ImageGenerateParamsResponseFormatURL,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) != 1 || r.Data[0].JSON.B64JSON.Valid() || !strings.HasPrefix(r.Data[0].URL, "http") {
			t.Fatalf("want one url and no b64_json: %.300s", r.RawJSON())
		}

		// What a user does with the link: a plain GET, no key.
		res, err := http.Get(r.Data[0].URL)
		if err != nil {
			t.Fatal(err)
		}
		linked, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", r.Data[0].URL, res.StatusCode, err)
		}
		if ct := res.Header.Get("Content-Type"); ct != "image/png" {
			t.Errorf("Content-Type %q", ct)
		}
		assertPNGBytes(t, linked)
		if len(linked) != size {
			t.Errorf("%d bytes, want the fake's configured %d", len(linked), size)
		}

		b, err := c.Images.Generate(ctx(t), openai.ImageGenerateParams{
			Model: k.model, Prompt: imagePrompt, ResponseFormat: openai.ImageGenerateParamsResponseFormatB64JSON,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Data) != 1 {
			t.Fatalf("%d images", len(b.Data))
		}
		if sha256hex(linked) != sha256hex(b64Image(t, b.Data[0])) {
			t.Error("the image by link differs from the image inline")
		}
		assertUpstreamCalls(t, k, 2)
	})
}

func TestImagesEditTwoFilesInOrder(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		// Two noise PNGs of about 77 KB each: many buffers of the multipart body, no compression to hide a
		// mix-up.
		inputs := [][]byte{makePNG(t, 160, 120, 1), makePNG(t, 120, 160, 2)}
		const prompt = "put the first picture on the left of the second"
		c := newClient(env.key)
		r, err := c.Images.Edit(ctx(t), openai.ImageEditParams{
			Model:  k.model,
			Prompt: prompt,
			Image: openai.ImageEditParamsImageUnion{OfFileArray: []io.Reader{
				openai.File(bytes.NewReader(inputs[0]), "left.png", "image/png"),
				openai.File(bytes.NewReader(inputs[1]), "right.png", "image/png"),
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) != 1 {
			t.Fatalf("%d images", len(r.Data))
		}
		b64Image(t, r.Data[0]) // b64_json is the default
		if r.Usage.OutputTokens != 1290 {
			t.Errorf("output_tokens %d, want 1290", r.Usage.OutputTokens)
		}
		assertUpstreamCalls(t, k, 1)

		var want []string
		for _, in := range inputs {
			want = append(want, base64.StdEncoding.EncodeToString(in))
		}
		body := lastBody(t, k.server)
		if k.name == "gemini" {
			if got := geminiInlineImages(t, body); !slices.Equal(got, want) {
				t.Errorf("the Gemini fake got %d inlineData parts (intact and in order: %v), want the 2 inputs in order",
					len(got), len(got) == 2 && got[0] == want[0] && got[1] == want[1])
			}
			if !bytes.Contains(body, []byte(prompt)) {
				t.Error("the prompt did not reach Google")
			}
			return
		}
		urls := make([]string, len(want))
		for i, b := range want {
			urls[i] = "data:image/png;base64," + b
		}
		if got := resellerImageURLs(t, body); !slices.Equal(got, urls) {
			t.Errorf("the reseller got %d image_url parts, want the 2 inputs in order", len(got))
		}
	})
}
