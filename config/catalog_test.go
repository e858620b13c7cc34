package config

import (
	"strings"
	"testing"
)

const catalogBase = `
keys: [{ name: k, key: client-key-0123456789 }]
providers:
  - name: google
    kind: gemini
    base_url: https://generativelanguage.googleapis.com/v1beta
    api_key: k
    models: { nano-banana: gemini-2.5-flash-image-preview, pro: gemini-3-pro-image }
    price: { per_image: 0.039 }
  - name: reseller
    kind: openai
    base_url: https://example.com/v1
    api_key: k
    models: { nano-banana: gemini-2.5-flash-image-preview, pro: gemini-3-pro-image-preview }
    price: { per_image: 0.035 }
`

func TestRetiredGoogleModelIsSentAsItsSuccessor(t *testing.T) {
	cfg, warnings, err := Parse([]byte(catalogBase), "cfg.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Providers[0].Models["nano-banana"]; got != "gemini-2.5-flash-image" {
		t.Errorf("google is sent %q", got)
	}
	if got := cfg.Providers[1].Models["nano-banana"]; got != "gemini-2.5-flash-image-preview" {
		t.Errorf("a reseller's own model name was changed to %q", got)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "retired gemini-2.5-flash-image-preview on 2025-10-31") ||
		!strings.Contains(warnings[0], "cfg.yaml:8:") {
		t.Errorf("warnings %q", warnings)
	}
}

func TestPricesComeFromTheCatalogueOnGoogleAndFromTheProviderElsewhere(t *testing.T) {
	cfg, _, err := Parse([]byte(catalogBase+`    prices:
      pro: { per_image: 0.10, per_image_by_size: { 4K: 0.20 } }
`), "cfg.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	google, reseller := &cfg.Providers[0], &cfg.Providers[1]
	for _, tc := range []struct {
		p           *Provider
		model, size string
		usd         float64
	}{
		{google, "nano-banana", "", 0.039},
		{google, "pro", "1K", 0.134},
		{google, "pro", "4K", 0.24},
		{reseller, "nano-banana", "4K", 0.035},
		{reseller, "pro", "1K", 0.10},
		{reseller, "pro", "4K", 0.20},
	} {
		if got := cfg.PriceOf(tc.p, tc.model).PerImageAt(tc.size); got != tc.usd {
			t.Errorf("%s %s %s: $%v, want $%v", tc.p.Name, tc.model, tc.size, got, tc.usd)
		}
	}
	if m := cfg.ModelOf("pro"); m == nil || m.Name != "gemini-3-pro-image" {
		t.Errorf("ModelOf(pro) = %v", m)
	}
	if cfg.ModelOf("no-such") != nil {
		t.Error("an unmapped model has a catalogue entry")
	}
}

func TestCatalogueAndPriceProblems(t *testing.T) {
	ps := problems(t, catalogBase+`    prices:
      other: { per_image: 0.1 }
      pro: { per_image: 0.1, per_image_by_size: { 8K: 1, 4K: -1 } }
catalog:
  - name: gemini-3-pro-image
    default_size: 9K
`, nil)
	for _, want := range []string{
		"providers[1].prices.other: \"other\" is not a model this provider maps",
		"providers[1].prices.pro.per_image_by_size.8K: \"8K\" is not a size of gemini-3-pro-image",
		"providers[1].prices.pro.per_image_by_size.4K: must be a number from 0 to",
		"catalog: model \"gemini-3-pro-image\": default_size \"9K\" is not one of its sizes",
	} {
		if !strings.Contains(ps.Error(), want) {
			t.Errorf("no problem %q in:\n%v", want, ps.Error())
		}
	}
}

// TestResellerWithoutAPriceIsRefused: an openai-kind provider whose images
// would bill $0 (budgets never bind, cheapest routing prefers it) is a
// config error, unless each model it serves has its own price.
func TestResellerWithoutAPriceIsRefused(t *testing.T) {
	const reseller = `
keys: [{ name: k, key: client-key-0123456789 }]
providers:
  - name: reseller
    kind: openai
    base_url: https://example.com/v1
    api_key: k
    models: { a: a, b: b }
`
	ps := problems(t, reseller, nil)
	if !strings.Contains(ps.Error(), `cfg.yaml:4: providers[0].price.per_image: provider "reseller" bills "a" at $0 an image`) {
		t.Errorf("problems:\n%v", ps.Error())
	}
	if _, _, err := Parse([]byte(reseller+"    prices: { a: { per_image: 0.03 }, b: { per_image_by_size: { 1K: 0.03 } } }\n"),
		"cfg.yaml", env(nil)); err != nil {
		t.Errorf("per-model prices refused: %v", err)
	}
}

// TestDemoKeyAnswersOnlyOnLoopback: the README's demo key is refused when
// the gateway listens where other machines reach it (the Docker image's
// 0.0.0.0), and accepted on loopback.
func TestDemoKeyAnswersOnlyOnLoopback(t *testing.T) {
	yml := func(listen string) string {
		return `
server: { listen: "` + listen + `" }
providers:
  - { name: g, kind: gemini, base_url: "https://g.example", api_key: k, models: { m: gemini-2.5-flash-image } }
keys:
  - { name: demo, key: sk-nanogate-demo }
`
	}
	for _, listen := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080"} {
		if _, _, err := Parse([]byte(yml(listen)), "cfg.yaml", env(nil)); err != nil {
			t.Errorf("%s: %v", listen, err)
		}
	}
	for _, listen := range []string{"0.0.0.0:8080", ":8080", "10.0.0.5:8080"} {
		ps := problems(t, yml(listen), nil)
		if !strings.Contains(ps.Error(), "keys[0].key: the README's demo key answers only on a loopback listener") {
			t.Errorf("%s: %v", listen, ps.Error())
		}
	}
}

// TestNoUsableProviderIsRefusedOffLoopback: every provider disabled (no
// api_key) is a warning on loopback (a try-out), an error elsewhere.
func TestNoUsableProviderIsRefusedOffLoopback(t *testing.T) {
	yml := func(listen string) string {
		return `
server: { listen: "` + listen + `" }
providers:
  - { name: g, kind: gemini, base_url: "https://g.example", api_key: "${GK:-}", models: { m: gemini-2.5-flash-image } }
keys:
  - { name: k, key: client-key-0123456789 }
`
	}
	if _, warns, err := Parse([]byte(yml("127.0.0.1:8080")), "cfg.yaml", env(nil)); err != nil || len(warns) == 0 {
		t.Errorf("on loopback: warnings %q, error %v", warns, err)
	}
	ps := problems(t, yml("0.0.0.0:8080"), nil)
	if !strings.Contains(ps.Error(), "providers: no provider is enabled (every api_key is empty) on a listener other machines reach") {
		t.Errorf("problems:\n%v", ps.Error())
	}
}
