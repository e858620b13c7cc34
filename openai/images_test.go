package openai

import (
	"testing"

	"nanogate/catalog"
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
