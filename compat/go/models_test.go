package compat

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestModelsListPerKey(t *testing.T) {
	cleanFakes(t)
	ids := func(key string) []string {
		c := newClient(key)
		it := c.Models.ListAutoPaging(ctx(t))
		var out []string
		for it.Next() {
			m := it.Current()
			if m.Object != "model" || m.OwnedBy == "" {
				t.Errorf("model %s", m.RawJSON())
			}
			out = append(out, m.ID)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	want := []string{env.modelBoth, env.modelPro}
	for _, k := range kinds {
		want = append(want, k.model)
	}
	slices.Sort(want)
	if got := ids(env.key); !slices.Equal(got, want) {
		t.Errorf("the unrestricted key sees %q, want %q", got, want)
	}
	if got := ids(env.restrictedKey); !slices.Equal(got, []string{env.modelBoth}) {
		t.Errorf("the restricted key sees %q, want only %q", got, env.modelBoth)
	}
}

// TestModelsRetrieve: Models.Get answers a model the key may use and is a
// 404 the SDK reports as an error for one it may not.
func TestModelsRetrieve(t *testing.T) {
	cleanFakes(t)
	c := newClient(env.key)
	m, err := c.Models.Get(ctx(t), env.modelBoth)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != env.modelBoth || m.Object != "model" || m.OwnedBy == "" {
		t.Errorf("model %s", m.RawJSON())
	}
	rc := newClient(env.restrictedKey)
	_, err = rc.Models.Get(ctx(t), kinds[0].model)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("a model the key may not use: %v", err)
	}
}

// TestPro4KIsBilledByTheCatalogue: a Gemini 3 Pro Image request at 4K through the SDK bills 2000 image tokens
// and $0.24 for its image.
func TestPro4KIsBilledByTheCatalogue(t *testing.T) {
	cleanFakes(t)
	c := newClient(env.proKey)
	res, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: env.modelPro, Messages: prompt},
		option.WithJSONSet("image_config", map[string]string{"image_size": "4K"}))
	if err != nil {
		t.Fatal(err)
	}
	// The SDK's type has no image_tokens: read it from the raw answer.
	var raw struct {
		Usage struct {
			CompletionTokensDetails struct {
				ImageTokens int `json:"image_tokens"`
			} `json:"completion_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(res.RawJSON()), &raw); err != nil {
		t.Fatal(err)
	}
	if n := raw.Usage.CompletionTokensDetails.ImageTokens; n != 2000 {
		t.Errorf("%d image tokens, want 2000", n)
	}
	var usage struct {
		Key struct {
			Requests int64   `json:"requests"`
			Images   int64   `json:"images"`
			CostUSD  float64 `json:"cost_usd"`
		} `json:"key"`
	}
	waitFor(t, "the request's record", 5*time.Second, func() bool {
		if err := c.Get(ctx(t), "usage", nil, &usage); err != nil {
			t.Fatal(err)
		}
		return usage.Key.Requests == 1
	})
	// $0.24 for the image, plus 17 prompt tokens at $2/M and 14 text tokens at $12/M.
	if usage.Key.Images != 1 || usage.Key.CostUSD < 0.24 || usage.Key.CostUSD >= 0.2403 {
		t.Errorf("usage %+v, want one image billed about $0.24", usage.Key)
	}
}
