package compat

import (
	"bytes"
	"net/http"
	"slices"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
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
