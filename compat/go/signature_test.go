package compat

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/openai/openai-go/v3"
)

// TestTwoTurnEditSendsThoughtSignatureBack: Google's 3.x image models sign
// the images they draw (Gemini 3 Pro Image here: the catalogue says 2.5 Flash
// Image signs none, so its images are not digested). The SDK only sends back the assistant message it got
// (ToParam); the second request Google receives carries the first answer's
// signature on that image.
func TestTwoTurnEditSendsThoughtSignatureBack(t *testing.T) {
	cleanFakes(t)
	k := kindNamed("gemini")
	control(t, "POST", "/thought-signatures?on=true&server="+k.server, nil)
	c := newClient(env.key)
	first, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: env.modelPro, Messages: prompt})
	if err != nil {
		t.Fatal(err)
	}
	oneImage(t, first.Choices[0].Message.Content)
	var issued struct {
		Signatures []string `json:"signatures"`
	}
	if err := json.Unmarshal(control(t, "GET", "/signatures?server="+k.server, nil), &issued); err != nil {
		t.Fatal(err)
	}
	if len(issued.Signatures) != 1 {
		t.Fatalf("the fake issued %d signatures, want 1", len(issued.Signatures))
	}

	turns := append(slices.Clone(prompt), first.Choices[0].Message.ToParam(), openai.UserMessage("make it blue"))
	second, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: env.modelPro, Messages: turns})
	if err != nil {
		t.Fatal(err)
	}
	oneImage(t, second.Choices[0].Message.Content)

	var sent struct {
		Contents []struct {
			Role  string `json:"role"`
			Parts []struct {
				InlineData       *json.RawMessage `json:"inlineData"`
				ThoughtSignature string           `json:"thoughtSignature"`
			} `json:"parts"`
		} `json:"contents"`
	}
	body := lastBody(t, k.server)
	if err := json.Unmarshal(body, &sent); err != nil {
		t.Fatal(err)
	}
	var sigs []string
	for _, ct := range sent.Contents {
		for _, p := range ct.Parts {
			if p.ThoughtSignature == "" {
				continue
			}
			if ct.Role != "model" || p.InlineData == nil {
				t.Errorf("signature on a %s part without an image", ct.Role)
			}
			sigs = append(sigs, p.ThoughtSignature)
		}
	}
	if !slices.Equal(sigs, issued.Signatures) {
		t.Fatalf("the second request carries signatures %q, want the first answer's %q", sigs, issued.Signatures)
	}
}
