package config

import (
	"slices"
	"testing"
)

func TestChangesSplitWhatAReloadAppliesFromWhatNeedsARestart(t *testing.T) {
	const base = `
server: { listen: "127.0.0.1:8080" }
providers: [{ name: g, kind: gemini, base_url: "https://g.example", api_key: k, models: { m: gemini-2.5-flash-image } }]
keys: [{ name: k, key: client-key-0123456789 }]
`
	old, _ := mustParse(t, base, nil)
	cur, _ := mustParse(t, base, nil)
	if a, r := Changes(old, cur); len(a)+len(r) != 0 {
		t.Fatalf("no change reported as %v, %v", a, r)
	}
	cur, _ = mustParse(t, `
server: { listen: "127.0.0.1:9090" }
providers: [{ name: g, kind: gemini, base_url: "https://g.example", api_key: k2, models: { m: gemini-2.5-flash-image } }]
keys: [{ name: k, key: client-key-0123456789, rpm: 5 }]
images: { format: images, offload: { ttl: 2h } }
batch: { workers: 3, max_share: 0.3 }
`, nil)
	applied, restart := Changes(old, cur)
	if want := []string{"providers", "images.format", "batch.max_share", "keys"}; !slices.Equal(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if want := []string{"server", "images.offload", "batch.workers"}; !slices.Equal(restart, want) {
		t.Errorf("restart %v, want %v", restart, want)
	}
}

func TestModelsInOrderFollowTheFile(t *testing.T) {
	cfg, _ := mustParse(t, `
providers:
  - name: r
    kind: openai
    base_url: https://r.example/v1
    api_key: k
    price: { per_image: 0.03 }
    models:
      zeta-image: z
      alpha: a
  - name: g
    kind: gemini
    base_url: https://g.example
    api_key: k
    models: { beta: gemini-2.5-flash-image, alpha: gemini-2.5-flash-image }
`, nil)
	if got, want := cfg.ModelsInOrder(), []string{"zeta-image", "alpha", "beta"}; !slices.Equal(got, want) {
		t.Errorf("ModelsInOrder = %q, want %q", got, want)
	}
}
