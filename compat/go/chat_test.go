package compat

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
)

func TestChatCompletionReturnsMarkdownPNG(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		c := newClient(env.key)
		r, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt})
		if err != nil {
			t.Fatal(err)
		}
		if r.Object != "chat.completion" || r.ID == "" || r.Created < 1_600_000_000 || r.Model != k.model || len(r.Choices) != 1 {
			t.Fatalf("object %q, id %q, created %d, model %q, %d choices", r.Object, r.ID, r.Created, r.Model, len(r.Choices))
		}
		ch := r.Choices[0]
		if ch.Message.Role != "assistant" || ch.FinishReason != "stop" {
			t.Fatalf("role %q, finish_reason %q", ch.Message.Role, ch.FinishReason)
		}
		oneImage(t, ch.Message.Content)
		// OpenAI's schema requires both, nullable: present as null.
		if ch.Message.JSON.Refusal.Raw() != "null" || ch.JSON.Logprobs.Raw() != "null" {
			t.Errorf("refusal %q, logprobs %q: want both present and null", ch.Message.JSON.Refusal.Raw(), ch.JSON.Logprobs.Raw())
		}
		if n := imageTokens(t, r.Usage); n != 1290 {
			t.Errorf("image_tokens = %d, want 1290", n)
		}
		if r.Usage.CompletionTokens < 1290 || r.Usage.TotalTokens != r.Usage.PromptTokens+r.Usage.CompletionTokens {
			t.Errorf("usage %s", r.Usage.RawJSON())
		}
		assertServedOnce(t, k)
	})
}

func TestTwoInputImagesReachUpstreamInOrder(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		parts := []openai.ChatCompletionContentPartUnionParam{
			openai.TextContentPart("put the first picture on the left of the second"),
		}
		var urls []string
		for _, b64 := range inputPNGs {
			u := "data:image/png;base64," + b64
			urls = append(urls, u)
			parts = append(parts, openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: u}))
		}
		c := newClient(env.key)
		r, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{
			Model:    k.model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(parts)},
		})
		if err != nil {
			t.Fatal(err)
		}
		oneImage(t, r.Choices[0].Message.Content)
		if n := imageTokens(t, r.Usage); n != 1290 {
			t.Errorf("image_tokens = %d, want 1290", n)
		}
		assertServedOnce(t, k)

		body := lastBody(t, k.server)
		if k.name == "gemini" {
			if got := geminiInlineImages(t, body); !slices.Equal(got, inputPNGs) {
				t.Errorf("the Gemini fake got %d inlineData parts, want the 2 inputs in order", len(got))
			}
		} else if got := resellerImageURLs(t, body); !slices.Equal(got, urls) {
			t.Errorf("the reseller got %d image_url parts, want the 2 inputs in order", len(got))
		}
	})
}

func TestStreamWithIncludeUsage(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		c := newClient(env.key)
		s := c.Chat.Completions.NewStreaming(ctx(t), openai.ChatCompletionNewParams{
			Model:         k.model,
			Messages:      prompt,
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		defer s.Close()
		var chunks []openai.ChatCompletionChunk
		acc := openai.ChatCompletionAccumulator{}
		for s.Next() {
			chunk := s.Current()
			chunks = append(chunks, chunk)
			if !acc.AddChunk(chunk) {
				t.Fatalf("the SDK's accumulator refused chunk %d: %s", len(chunks), chunk.RawJSON())
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if len(chunks) < 3 {
			t.Fatalf("%d chunks", len(chunks))
		}
		if d := chunks[0].Choices; len(d) != 1 || d[0].Delta.Role != "assistant" {
			t.Errorf("first chunk %s, want the assistant role", chunks[0].RawJSON())
		}
		finishes := 0
		for i, ch := range chunks {
			if ch.Object != "chat.completion.chunk" {
				t.Errorf("chunk %d object %q", i, ch.Object)
			}
			if len(ch.Choices) > 0 && ch.Choices[0].FinishReason == "stop" {
				finishes++
			}
			for _, c := range ch.Choices {
				if c.JSON.Logprobs.Raw() != "null" {
					t.Errorf("chunk %d: logprobs %q, want null", i, c.JSON.Logprobs.Raw())
				}
			}
			if i < len(chunks)-1 && ch.JSON.Usage.Valid() {
				t.Errorf("chunk %d carries usage: %s", i, ch.RawJSON())
			}
		}
		if finishes != 1 {
			t.Errorf("%d finish_reason chunks, want 1", finishes)
		}
		last := chunks[len(chunks)-1]
		if len(last.Choices) != 0 || !last.JSON.Usage.Valid() {
			t.Fatalf("last chunk %.300s, want the usage chunk with no choices", last.RawJSON())
		}
		if n := imageTokens(t, last.Usage); n != 1290 {
			t.Errorf("image_tokens = %d, want 1290", n)
		}

		// The SDK's accumulator puts the deltas back together.
		if len(acc.Choices) != 1 || acc.Choices[0].FinishReason != "stop" {
			t.Fatalf("accumulated %d choices", len(acc.Choices))
		}
		oneImage(t, acc.Choices[0].Message.Content)
		// The accumulator sums the usage fields the SDK knows and drops the others (image_tokens among them):
		// a Go user reads image_tokens from the last chunk, as above.
		if acc.Usage.CompletionTokens != last.Usage.CompletionTokens || acc.Usage.CompletionTokens < 1290 {
			t.Errorf("accumulated completion_tokens = %d, last chunk's %d", acc.Usage.CompletionTokens, last.Usage.CompletionTokens)
		}
		assertServedOnce(t, k)
	})
}

func TestRealSizeImagePlainAndStreamed(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		setImageSize(t, k.server, 1_500_000)
		c := newClient(env.key)
		params := openai.ChatCompletionNewParams{Model: k.model, Messages: prompt}
		r, err := c.Chat.Completions.New(ctx(t), params)
		if err != nil {
			t.Fatal(err)
		}
		png := oneImage(t, r.Choices[0].Message.Content)
		if len(png) < 1_400_000 {
			t.Fatalf("%d bytes", len(png))
		}

		s := c.Chat.Completions.NewStreaming(ctx(t), params)
		defer s.Close()
		var content string
		for s.Next() {
			if ch := s.Current(); len(ch.Choices) > 0 {
				content += ch.Choices[0].Delta.Content
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(oneImage(t, content), png) {
			t.Error("the streamed image differs from the plain one")
		}
	})
}

func TestRawResponseShowsRequestIDAndProvider(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		var raw *http.Response
		c := newClient(env.key)
		r, err := c.Chat.Completions.New(ctx(t),
			openai.ChatCompletionNewParams{Model: k.model, Messages: prompt}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if raw.Header.Get("x-request-id") == "" {
			t.Error("no x-request-id")
		}
		if p := raw.Header.Get("x-nanogate-provider"); p != k.provider {
			t.Errorf("x-nanogate-provider = %q, want %q", p, k.provider)
		}
		oneImage(t, r.Choices[0].Message.Content)
	})
}

func TestMultiTurnSendsTheAssistantMessageBack(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		c := newClient(env.key)
		first, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt})
		if err != nil {
			t.Fatal(err)
		}
		url := markdownImages(first.Choices[0].Message.Content)
		oneImage(t, first.Choices[0].Message.Content)
		second, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{
			Model: k.model,
			Messages: []openai.ChatCompletionMessageParamUnion{
				prompt[0], first.Choices[0].Message.ToParam(), openai.UserMessage("make it blue"),
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		oneImage(t, second.Choices[0].Message.Content)

		body := lastBody(t, k.server)
		if k.name == "gemini" {
			// The image of the earlier answer is an image again for Google, in the model's turn.
			b64, _ := strings.CutPrefix(url[0], "data:image/png;base64,")
			if got := geminiInlineImages(t, body); !slices.Equal(got, []string{b64}) {
				t.Errorf("the Gemini fake got %d inlineData parts, want the earlier image", len(got))
			}
			if !strings.Contains(string(body), `"role":"model"`) {
				t.Errorf("no model turn in %.300s", body)
			}
		} else {
			var req struct {
				Messages []struct{ Role, Content string }
			}
			if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) != 3 || req.Messages[1].Role != "assistant" ||
				!slices.Equal(markdownImages(req.Messages[1].Content), url) {
				t.Errorf("the reseller got %.300s", body)
			}
		}
	})
}

func TestImagesFormatHeader(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		c := newClient(env.key)
		r, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt},
			option.WithHeader("x-nanogate-image-format", "images"))
		if err != nil {
			t.Fatal(err)
		}
		m := r.Choices[0].Message
		if n := len(markdownImages(m.Content)); n != 0 {
			t.Errorf("%d images left in content", n)
		}
		// message.images is not a field of the SDK's type: it comes from ExtraFields, as a Go user reads it.
		var images []struct {
			Type     string
			ImageURL struct{ URL string } `json:"image_url"`
		}
		if err := json.Unmarshal([]byte(m.JSON.ExtraFields["images"].Raw()), &images); err != nil || len(images) != 1 {
			t.Fatalf("message.images %q: %v", m.JSON.ExtraFields["images"].Raw(), err)
		}
		if images[0].Type != "image_url" {
			t.Errorf("type %q", images[0].Type)
		}
		assertPNG(t, images[0].ImageURL.URL)
	})
}

func TestStreamCutMidwayIsAnSDKError(t *testing.T) {
	forEachKind(t, func(t *testing.T, k kind) {
		setFault(t, k.server, map[string]any{"drop_mid_body": true})
		c := newClient(env.key)
		s := c.Chat.Completions.NewStreaming(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt})
		defer s.Close()
		var content string
		for s.Next() {
			if ch := s.Current(); len(ch.Choices) > 0 {
				content += ch.Choices[0].Delta.Content
			}
		}
		var se *ssestream.StreamError
		if !errors.As(s.Err(), &se) || !strings.Contains(se.Message, `"upstream_error"`) {
			t.Fatalf("error %v after %q, want the SDK's StreamError with code upstream_error", s.Err(), content)
		}
		if n := len(markdownImages(content)); n != 0 {
			t.Errorf("%d images in a cut stream", n)
		}
	})
}

func TestImageConfigReachesGoogle(t *testing.T) {
	cleanFakes(t)
	k := kindNamed("gemini")
	c := newClient(env.key)
	r, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: k.model, Messages: prompt},
		option.WithJSONSet("image_config", map[string]string{"aspect_ratio": "16:9"}))
	if err != nil {
		t.Fatal(err)
	}
	oneImage(t, r.Choices[0].Message.Content)
	type imageConfig struct {
		AspectRatio  string `json:"aspectRatio"`
		AspectRatio2 string `json:"aspect_ratio"`
	}
	var req struct {
		GenerationConfig struct {
			ImageConfig  *imageConfig `json:"imageConfig"`
			ImageConfig2 *imageConfig `json:"image_config"`
		} `json:"generationConfig"`
	}
	body := lastBody(t, k.server)
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	ic := cmp.Or(req.GenerationConfig.ImageConfig, req.GenerationConfig.ImageConfig2, &imageConfig{})
	if got := cmp.Or(ic.AspectRatio, ic.AspectRatio2); got != "16:9" {
		t.Errorf("aspect ratio %q, want 16:9; body %.300s", got, body)
	}
}
