package compat

import (
	"slices"
	"testing"
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
