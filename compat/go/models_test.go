package compat

import (
	"errors"
	"slices"
	"testing"

	"github.com/openai/openai-go/v3"
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
	want := []string{env.modelBoth}
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
