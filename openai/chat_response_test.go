package openai

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"nanogate/gateway"
	"nanogate/provider"
)

func answer(text string, imgs ...string) *gateway.Answer {
	var images []provider.Image
	for _, b := range imgs {
		images = append(images, provider.Image{MIME: "image/png", B64: []byte(b)})
	}
	return &gateway.Answer{
		Result: &provider.Result{Created: 7, Choices: []provider.Choice{{Text: []byte(text), Images: images, FinishReason: "stop"}}},
		Usage:  gateway.Usage{PromptTokens: 5, TextTokens: 3, Images: int64(len(imgs)), ImageTokens: 1290 * int64(len(imgs)), CompletionTokens: 3 + 1290*int64(len(imgs)), TotalTokens: 8 + 1290*int64(len(imgs))},
	}
}

func render(t *testing.T, a *gateway.Answer, f Format) map[string]any {
	t.Helper()
	b := NewChatBody(a, "id1", "m", f)
	var w bytes.Buffer
	n, err := b.WriteTo(&w)
	if err != nil || int(n) != b.Len() || w.Len() != b.Len() {
		t.Fatalf("WriteTo wrote %d (err %v), Len %d", n, err, b.Len())
	}
	// Read gives the same bytes as WriteTo.
	r, _ := io.ReadAll(NewChatBody(a, "id1", "m", f))
	if !bytes.Equal(r, w.Bytes()) {
		t.Fatalf("Read and WriteTo differ:\n%s\n%s", r, w.Bytes())
	}
	var m map[string]any
	if err := json.Unmarshal(w.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, w.Bytes())
	}
	return m
}

func message(m map[string]any) map[string]any {
	return m["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
}

func TestChatBodyFormats(t *testing.T) {
	a := answer(`Hi \"there\"\nok`, "QUJD", "REVG")
	t.Run("markdown", func(t *testing.T) {
		msg := message(render(t, a, FormatMarkdown))
		want := "Hi \"there\"\nok\n\n![image](data:image/png;base64,QUJD)\n\n![image](data:image/png;base64,REVG)"
		if msg["content"] != want || msg["images"] != nil {
			t.Fatalf("content = %q", msg["content"])
		}
	})
	t.Run("data_url", func(t *testing.T) {
		msg := message(render(t, a, FormatDataURL))
		imgs := msg["images"].([]any)
		if msg["content"] != "data:image/png;base64,QUJD" || len(imgs) != 1 ||
			imgs[0].(map[string]any)["image_url"].(map[string]any)["url"] != "data:image/png;base64,REVG" {
			t.Fatalf("message = %v", msg)
		}
	})
	t.Run("images", func(t *testing.T) {
		msg := message(render(t, a, FormatImages))
		imgs := msg["images"].([]any)
		if msg["content"] != "Hi \"there\"\nok" || len(imgs) != 2 || imgs[1].(map[string]any)["type"] != "image_url" {
			t.Fatalf("message = %v", msg)
		}
	})
	t.Run("data_url without image keeps the text", func(t *testing.T) {
		msg := message(render(t, answer("only text"), FormatDataURL))
		if msg["content"] != "only text" {
			t.Fatalf("content = %q", msg["content"])
		}
	})
	t.Run("usage", func(t *testing.T) {
		u := render(t, a, FormatMarkdown)["usage"].(map[string]any)
		d := u["completion_tokens_details"].(map[string]any)
		if u["completion_tokens"] != float64(2583) || d["image_tokens"] != float64(2580) || u["total_tokens"] != float64(2588) {
			t.Fatalf("usage = %v", u)
		}
	})
}

func TestChatBodyWritesImagesWithoutCopying(t *testing.T) {
	img := bytes.Repeat([]byte("QUJD"), 1<<18) // 1 MiB of base64
	a := answer("t", string(img))
	a.Result.Choices[0].Images[0].B64 = img
	b := NewChatBody(a, "id", "m", FormatMarkdown)
	found := false
	for _, p := range b.parts {
		if p.ext != nil && &p.ext[0] == &img[0] {
			found = true
		}
	}
	if !found || len(b.small) > 1024 {
		t.Fatalf("the image was copied into the rendered pieces (small=%d bytes)", len(b.small))
	}
}
