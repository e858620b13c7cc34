package openai

import (
	"bytes"
	"io"
	"regexp"
	"testing"

	"nanogate/catalog"
	"nanogate/gateway"
	"nanogate/provider"
)

// TestImagesAPISizeAndQualityPickTheImageSize: OpenAI's size and quality
// become Gemini's image size for the model the catalogue knows.
func TestImagesAPISizeAndQualityPickTheImageSize(t *testing.T) {
	cat := catalog.Default()
	for _, tc := range []struct {
		model, size, quality, want string
	}{
		{"gemini-3-pro-image", "", "", "1K"},
		{"gemini-3-pro-image", "4096x4096", "", "4K"},
		{"gemini-3-pro-image", "1792x1024", "", "2K"},
		{"gemini-3-pro-image", "1024x1024", "hd", "1K"},
		{"gemini-3-pro-image", "auto", "high", "2K"},
		{"gemini-3-pro-image", "", "low", "1K"},
		{"gemini-3-pro-image", "4k", "", "4K"},
		{"gemini-3.1-flash-image", "512x512", "", "512"},
		{"gemini-3.1-flash-image", "", "low", "512"},
		{"gemini-2.5-flash-image", "1792x1024", "hd", "1K"},
		{"unknown-model", "1792x1024", "hd", ""},
	} {
		r := &ImagesRequest{Model: tc.model, Prompt: "p", N: 1}
		for k, v := range map[string]string{"size": tc.size, "quality": tc.quality} {
			if v != "" {
				if err := r.Param(k, v); err != nil {
					t.Fatalf("%s=%s: %v", k, v, err)
				}
			}
		}
		m, _, _ := cat.Lookup(tc.model)
		req, err := r.ChatRequest(m)
		if err != nil {
			t.Fatal(err)
		}
		if req.ImageSize != tc.want {
			t.Errorf("%s size %q quality %q: image size %q, want %q", tc.model, tc.size, tc.quality, req.ImageSize, tc.want)
		}
	}
	if err := (&ImagesRequest{}).Param("quality", "ultra"); err == nil {
		t.Error("quality ultra accepted")
	}
}

// TestImagesBodyWritesTheImagesWithoutACopy: the images response written
// piece by piece (and read) is AppendImagesResponse's, byte for byte, its
// own buffer holds none of the images' base64, and closing it releases the
// upstream buffers once.
func TestImagesBodyWritesTheImagesWithoutACopy(t *testing.T) {
	b64 := bytes.Repeat([]byte("iVBORw0KGgo+"), 20000)
	imgs := []provider.Image{{MIME: "image/png", B64: b64}, {URL: "https://img.example/b.png"}, {MIME: "image/png", B64: b64[:400]}}
	u := gateway.Usage{PromptTokens: 12, ImageTokens: 2580}
	want := AppendImagesResponse(nil, imgs, u, 3)
	released := 0
	b := NewImagesBody(imgs, u, 3, func() { released++ })
	if len(b.small) >= len(b64) {
		t.Errorf("the body's own buffer is %d bytes: the image was copied", len(b.small))
	}
	var w bytes.Buffer
	if _, err := b.WriteTo(&w); err != nil {
		t.Fatal(err)
	}
	// created is the second: the two may straddle one.
	norm := func(x []byte) []byte { return regexp.MustCompile(`"created":\d+`).ReplaceAll(x, []byte(`"created":0`)) }
	if !bytes.Equal(norm(w.Bytes()), norm(want)) || b.Len() != len(want) {
		t.Errorf("WriteTo gave %d bytes (Len %d), AppendImagesResponse %d; they differ", w.Len(), b.Len(), len(want))
	}
	r, err := io.ReadAll(NewImagesBody(imgs, u, 3, nil))
	if err != nil || !bytes.Equal(norm(r), norm(want)) {
		t.Errorf("Read gave %d bytes (%v), want %d", len(r), err, len(want))
	}
	b.Close()
	b.Close()
	if released != 1 {
		t.Errorf("released %d times, want once", released)
	}
}
