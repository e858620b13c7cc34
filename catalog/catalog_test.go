package catalog

import (
	"os"
	"strings"
	"testing"
)

// TestEmbeddedCatalogueHasTodaysModels pins the figures the product
// promises: 2.5 Flash Image at exactly 1290 tokens and $0.039, 3 Pro Image
// at 1120/2000 tokens and $0.134/$0.24, 3.1 Flash Image at 747 to 2520.
func TestEmbeddedCatalogueHasTodaysModels(t *testing.T) {
	c := Default()
	for _, tc := range []struct {
		id, size string
		tokens   int64
		usd      float64
	}{
		{"gemini-2.5-flash-image", "", 1290, 0.039},
		{"gemini-2.5-flash-image", "1K", 1290, 0.039},
		{"gemini-3-pro-image", "1K", 1120, 0.134},
		{"gemini-3-pro-image", "2K", 1120, 0.134},
		{"gemini-3-pro-image", "4K", 2000, 0.24},
		{"gemini-3-pro-image-preview", "4K", 2000, 0.24},
		{"gemini-3.1-flash-image", "512", 747, 0.045},
		{"gemini-3.1-flash-image", "1K", 1120, 0.067},
		{"gemini-3.1-flash-image", "2K", 1680, 0.101},
		{"gemini-3.1-flash-image", "4K", 2520, 0.151},
		{"gemini-3.1-flash-lite-image", "", 1120, 0.0336},
	} {
		m, _, ok := c.Lookup(tc.id)
		if !ok {
			t.Fatalf("%s is not in the catalogue", tc.id)
		}
		tok, ok1 := m.ImageTokens(tc.size)
		usd, ok2 := m.ListUSD(tc.size)
		if !ok1 || !ok2 || tok != tc.tokens || usd != tc.usd {
			t.Errorf("%s %q: %d tokens $%v, want %d $%v", tc.id, tc.size, tok, usd, tc.tokens, tc.usd)
		}
	}
	m, on, ok := c.Lookup("gemini-2.5-flash-image-preview")
	if !ok || m.Name != "gemini-2.5-flash-image" || on != "2025-10-31" {
		t.Errorf("the retired preview resolves to %v retired %q", m, on)
	}
	if _, _, ok := c.Lookup("gpt-image-1"); ok {
		t.Error("a model Google does not make is in the catalogue")
	}
	m, _, _ = c.Lookup("gemini-3-pro-image")
	if _, ok := m.ImageTokens("512"); ok {
		t.Error("3 Pro Image makes 512 px images")
	}
	if m.AllowsAspect("1:8") || !m.AllowsAspect("21:9") {
		t.Error("3 Pro Image aspect ratios")
	}
	m, _, _ = c.Lookup("gemini-3.1-flash-image")
	if !m.AllowsAspect("1:8") || !m.AllowsAspect("8:1") {
		t.Error("3.1 Flash Image takes 1:8 and 8:1")
	}
	if got := strings.Join(m.SizeNames(), ","); got != "512,1K,2K,4K" {
		t.Errorf("sizes in order: %s", got)
	}
}

func TestOverridesReplaceFieldsAndAddModels(t *testing.T) {
	c, err := New([]Model{
		{Name: "gemini-3-pro-image", Sizes: map[string]Size{"1K": {Tokens: 1000}, "4K": {Tokens: 3000, USD: 0.5}}},
		{Name: "gemini-9-image", MaxOutputTokens: 1000, Sizes: map[string]Size{"1K": {Tokens: 100}},
			DefaultSize: "1K", AspectRatios: []string{"1:1"}, Price: Price{ImageOutput: 10}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, _, _ := c.Lookup("gemini-3-pro-image")
	if tok, _ := m.ImageTokens("1K"); tok != 1000 {
		t.Errorf("overridden 1K: %d tokens", tok)
	}
	if _, ok := m.ImageTokens("2K"); ok {
		t.Error("sizes are replaced whole")
	}
	if usd, _ := m.ListUSD("1K"); usd != 1000*120/1e6 {
		t.Errorf("a size without usd is priced by its tokens: $%v", usd)
	}
	if m.MaxOutputTokens != 32768 || m.Price.ImageOutput != 120 {
		t.Error("fields the override leaves unset keep the embedded values")
	}
	if m, _, ok := c.Lookup("gemini-9-image"); !ok || m.Sizes["1K"].Tokens != 100 {
		t.Error("a new model is added")
	}
}

func TestInvalidCataloguesAreRefused(t *testing.T) {
	base := func() Model {
		return Model{Name: "x-image", MaxOutputTokens: 100, Sizes: map[string]Size{"1K": {Tokens: 10}},
			DefaultSize: "1K", AspectRatios: []string{"1:1"}}
	}
	for name, mutate := range map[string]func(*Model){
		"no name":               func(m *Model) { m.Name = "" },
		"default not a size":    func(m *Model) { m.DefaultSize = "2K" },
		"tokens zero":           func(m *Model) { m.Sizes = map[string]Size{"1K": {Tokens: 0}} },
		"tokens huge":           func(m *Model) { m.Sizes = map[string]Size{"1K": {Tokens: 1 << 40}} },
		"negative price":        func(m *Model) { m.Price.Input = -1 },
		"price beyond bound":    func(m *Model) { m.Price.ImageOutput = 1e300 },
		"bad ratio":             func(m *Model) { m.AspectRatios = []string{"wide"} },
		"output limit zero":     func(m *Model) { m.MaxOutputTokens = 0 },
		"alias of another":      func(m *Model) { m.Aliases = []string{"gemini-3-pro-image"} },
		"retired without a day": func(m *Model) { m.Retired = []Retired{{Name: "old"}} },
		"retired is a model":    func(m *Model) { m.Retired = []Retired{{Name: "gemini-3-pro-image", On: "2026-01-01"}} },
	} {
		m := base()
		mutate(&m)
		if _, err := New([]Model{m}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New([]Model{base()}); err != nil {
		t.Fatalf("the valid base is refused: %v", err)
	}
}

// TestREADMETableIsTheCatalogue: the README's models table is generated
// from the embedded catalogue (go run ./catalog/gen), so it cannot drift.
func TestREADMETableIsTheCatalogue(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReplaceTable(string(b), Default().MarkdownTable())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatal("README.md's models table differs from catalog/models.yaml: run go run ./catalog/gen")
	}
}
