package accounting

import (
	"nanogate/config"
	"nanogate/internal/safemath"
)

// Cost is the price of a request's usage in integer micro-dollars:
//
//	per_image × images + round(promptTokens × input_per_mtok + textTokens × output_per_mtok) / 1e6
//
// with prices in micro-dollars (per image and per million tokens, as
// config.Price rounds them). The token part is computed exactly in integer
// arithmetic (micro-dollars × tokens) and rounded once per record, half up,
// to whole micro-dollars; images are whole micro-dollars already. Image
// tokens are not charged per token: per_image covers them. Negative counts
// count as zero, and a cost that would pass int64 is the largest int64 (a
// reservation of it is refused, never wrapped to a small one).
func Cost(p config.Price, images, promptTokens, textTokens int64) int64 {
	return CostAt(p, "", images, promptTokens, textTokens)
}

// CostAt is Cost for images of the named size (image_config.image_size),
// priced by the price's per-size entry when it has one.
func CostAt(p config.Price, size string, images, promptTokens, textTokens int64) int64 {
	images, promptTokens, textTokens = max(images, 0), max(promptTokens, 0), max(textTokens, 0)
	tok := safemath.Add(safemath.Mul(promptTokens, p.InputPerMTokMicros()), safemath.Mul(textTokens, p.OutputPerMTokMicros()))
	return safemath.Add(safemath.Mul(images, p.PerImageMicrosAt(size)), safemath.Add(tok, 500_000)/1_000_000)
}

// Pricer prices usage from a configuration: what each provider charges for
// each model (config.PriceOf: its own prices, or on the gemini kind the
// catalogue's list prices) and what Google's list price would have been.
// Build a new one on reload; it is read-only and safe for concurrent use.
type Pricer struct {
	// prices are, per provider, its price for each model it maps.
	prices map[string]map[string]config.Price
	// list is, per public model, Google's list price: the catalogue's for
	// a model it knows, else the price of the first gemini-kind provider
	// that maps it (enabled or not).
	list map[string]config.Price
	// candidates are, per public model, the prices of the enabled
	// providers that map it.
	candidates map[string][]config.Price
}

// NewPricer reads prices from cfg.
func NewPricer(cfg *config.Config) *Pricer {
	p := &Pricer{prices: map[string]map[string]config.Price{}, list: map[string]config.Price{},
		candidates: map[string][]config.Price{}}
	for i := range cfg.Providers {
		pc := &cfg.Providers[i]
		byModel := map[string]config.Price{}
		p.prices[pc.Name] = byModel
		for model := range pc.Models {
			pr := cfg.PriceOf(pc, model)
			byModel[model] = pr
			if _, ok := p.list[model]; !ok {
				if m := cfg.ModelOf(model); m != nil {
					p.list[model] = config.ListPrice(m)
				} else if pc.Kind == config.KindGemini {
					p.list[model] = pr
				}
			}
			if !pc.Disabled {
				p.candidates[model] = append(p.candidates[model], pr)
			}
		}
	}
	return p
}

// Charge sets rec.CostMicros at the serving provider's price for rec.Model
// and rec.Size, and rec.ListCostMicros at Google's list price of the same
// (the serving provider's when there is none, so that no saving is
// claimed). A failed record (no provider) costs zero. An unknown provider
// or a model it does not map costs zero too: the caller only names
// configured ones.
func (p *Pricer) Charge(rec *Record) {
	rec.CostMicros, rec.ListCostMicros = 0, 0
	if rec.Failed() {
		return
	}
	served, ok := p.prices[rec.Provider][rec.Model]
	if !ok {
		return
	}
	list, ok := p.list[rec.Model]
	if !ok {
		list = served
	}
	rec.CostMicros = CostAt(served, rec.Size, rec.Images, rec.PromptTokens, rec.TextTokens)
	rec.ListCostMicros = CostAt(list, rec.Size, rec.Images, rec.PromptTokens, rec.TextTokens)
}

// Estimate is a budget reservation for a request not yet routed: its
// expected usage, images of the named size, at the dearest enabled provider
// that maps model, so that a failover cannot cost more than was reserved.
// 0 when none maps it.
func (p *Pricer) Estimate(model, size string, images, promptTokens, textTokens int64) int64 {
	var most int64
	for _, pr := range p.candidates[model] {
		most = max(most, CostAt(pr, size, images, promptTokens, textTokens))
	}
	return most
}
