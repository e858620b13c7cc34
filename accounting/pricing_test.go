package accounting

import (
	"testing"
	"time"

	"nanogate/config"
)

func TestCostRoundsTheTokenPartOncePerRecordHalfUp(t *testing.T) {
	p := config.Price{PerImage: 0.035, InputPerMTok: 0.30, OutputPerMTok: 2.50}
	cheap := config.Price{PerImage: 0, InputPerMTok: 0.10, OutputPerMTok: 0.10}
	for _, tc := range []struct {
		name                 string
		price                config.Price
		images, prompt, text int64
		want                 int64
	}{
		{"one image", p, 1, 0, 0, 35_000},
		{"two images with tokens", p, 2, 100, 20, 70_000 + 80}, // 30 + 50 micro-dollars of tokens
		{"a fraction below half rounds down", p, 0, 1, 0, 0},   // 0.3
		{"above half rounds up", p, 0, 2, 0, 1},                // 0.6
		{"exactly half rounds up", cheap, 0, 5, 0, 1},          // 0.5
		{"parts add before rounding", cheap, 0, 3, 2, 1},       // 0.3 + 0.2
		{"text at the output price", p, 0, 0, 1_000_000, 2_500_000},
		{"a million images", p, 1_000_000, 0, 0, 35_000_000_000},
		{"negative counts are zero", p, -1, -5, -5, 0},
	} {
		if got := Cost(tc.price, tc.images, tc.prompt, tc.text); got != tc.want {
			t.Errorf("%s: Cost = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestPricerChargesTheServingProviderAndListsGooglesPrice(t *testing.T) {
	cfg := testConfig()
	cfg.Providers = append(cfg.Providers, config.Provider{Name: "other", Kind: "openai",
		Models: map[string]string{"only-here": "x", previewModel: "y"},
		Price:  config.Price{PerImage: 0.050, InputPerMTok: 1, OutputPerMTok: 1}, Disabled: true})
	p := NewPricer(cfg)
	at := time.Now()
	for _, tc := range []struct {
		name           string
		rec            Record
		cost, listCost int64
	}{
		{"reseller, listed at Google's price", served(p, "a", at, "k", "t", "laozhang", 1, 1, 0, 0), 35_000, 39_000},
		{"Google itself", served(p, "b", at, "k", "t", "google", 2, 1, 0, 0), 39_000, 39_000},
		{"a model Google does not map: no saving claimed",
			Record{ID: "c", Time: at, Model: "only-here", Provider: "other", Images: 1}, 50_000, 50_000},
		{"every provider failed", failedRecord("d", at, "k", "t", 3), 0, 0},
		{"an unknown provider", Record{ID: "e", Time: at, Model: previewModel, Provider: "gone", Images: 1}, 0, 0},
	} {
		p.Charge(&tc.rec)
		if tc.rec.CostMicros != tc.cost || tc.rec.ListCostMicros != tc.listCost {
			t.Errorf("%s: cost %d list %d, want %d %d", tc.name, tc.rec.CostMicros, tc.rec.ListCostMicros,
				tc.cost, tc.listCost)
		}
	}
	// The estimate is at the dearest enabled provider (the disabled
	// "other" at $0.05 is not a candidate).
	if got := p.Estimate(previewModel, "", 2, 1000, 100); got != Cost(cfg.Providers[1].Price, 2, 1000, 100) {
		t.Errorf("Estimate = %d, want Google's price %d", got, Cost(cfg.Providers[1].Price, 2, 1000, 100))
	}
	if got := p.Estimate("unknown", "", 1, 0, 0); got != 0 {
		t.Errorf("Estimate of an unmapped model = %d, want 0", got)
	}
}

// TestChargeBySize: a 3 Pro Image at 4K served by Google costs the
// catalogue's $0.24 (and lists at it); at a reseller with a flat price it
// costs that price and still lists at Google's $0.24 for the size.
func TestChargeBySize(t *testing.T) {
	cfg := &config.Config{Providers: []config.Provider{
		{Name: "google", Kind: "gemini", Models: map[string]string{"pro": "gemini-3-pro-image"},
			Price: config.Price{PerImage: 0.039}},
		{Name: "reseller", Kind: "openai", Models: map[string]string{"pro": "gemini-3-pro-image"},
			Price: config.Price{PerImage: 0.05}},
	}}
	p := NewPricer(cfg)
	for _, tc := range []struct {
		provider, size string
		cost, list     int64
	}{
		{"google", "4K", 240_000, 240_000},
		{"google", "1K", 134_000, 134_000},
		{"google", "", 134_000, 134_000},
		{"reseller", "4K", 50_000, 240_000},
	} {
		rec := Record{Model: "pro", Size: tc.size, Provider: tc.provider, Images: 1, ImageTokens: 2000, Status: 200}
		p.Charge(&rec)
		if rec.CostMicros != tc.cost || rec.ListCostMicros != tc.list {
			t.Errorf("%s %q: cost %d list %d, want %d %d", tc.provider, tc.size, rec.CostMicros, rec.ListCostMicros, tc.cost, tc.list)
		}
	}
	if got := p.Estimate("pro", "4K", 2, 0, 0); got != 480_000 {
		t.Errorf("estimate of two 4K images: %d, want the dearer provider's 480000", got)
	}
}
