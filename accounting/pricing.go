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
	images, promptTokens, textTokens = max(images, 0), max(promptTokens, 0), max(textTokens, 0)
	tok := safemath.Add(safemath.Mul(promptTokens, p.InputPerMTokMicros()), safemath.Mul(textTokens, p.OutputPerMTokMicros()))
	return safemath.Add(safemath.Mul(images, p.PerImageMicros()), safemath.Add(tok, 500_000)/1_000_000)
}

// Pricer prices usage from a configuration: what each provider charges and
// what Google's official price would have been. Build a new one on reload;
// it is read-only and safe for concurrent use.
type Pricer struct {
	providers map[string]pricedProvider
	// list is, per public model, the price of the first gemini-kind
	// provider (Google's own API) that maps it, enabled or not: its price
	// is the official one either way.
	list map[string]config.Price
	// candidates are, per public model, the prices of the enabled
	// providers that map it.
	candidates map[string][]config.Price
}

type pricedProvider struct {
	price  config.Price
	gemini bool
}

// NewPricer reads prices from cfg.
func NewPricer(cfg *config.Config) *Pricer {
	p := &Pricer{providers: map[string]pricedProvider{}, list: map[string]config.Price{},
		candidates: map[string][]config.Price{}}
	for i := range cfg.Providers {
		pc := &cfg.Providers[i]
		p.providers[pc.Name] = pricedProvider{pc.Price, pc.Kind == "gemini"}
		for model := range pc.Models {
			if _, ok := p.list[model]; !ok && pc.Kind == "gemini" {
				p.list[model] = pc.Price
			}
			if !pc.Disabled {
				p.candidates[model] = append(p.candidates[model], pc.Price)
			}
		}
	}
	return p
}

// Charge sets rec.CostMicros at the serving provider's price and
// rec.ListCostMicros at the official price of rec.Model: a gemini-kind
// provider's own price when it served, else the first gemini-kind provider
// mapping the model, else (no such provider) the serving provider's, so that
// no saving is claimed. A failed record (no provider) costs zero. An unknown
// provider costs zero too: the caller only names configured ones.
func (p *Pricer) Charge(rec *Record) {
	rec.CostMicros, rec.ListCostMicros = 0, 0
	if rec.Failed() {
		return
	}
	served, ok := p.providers[rec.Provider]
	if !ok {
		return
	}
	list := served.price
	if official, ok := p.list[rec.Model]; ok && !served.gemini {
		list = official
	}
	rec.CostMicros = Cost(served.price, rec.Images, rec.PromptTokens, rec.TextTokens)
	rec.ListCostMicros = Cost(list, rec.Images, rec.PromptTokens, rec.TextTokens)
}

// Estimate is a budget reservation for a request not yet routed: its
// expected usage at the dearest enabled provider that maps model, so that a
// failover cannot cost more than was reserved. 0 when none maps it.
func (p *Pricer) Estimate(model string, images, promptTokens, textTokens int64) int64 {
	var most int64
	for _, pr := range p.candidates[model] {
		most = max(most, Cost(pr, images, promptTokens, textTokens))
	}
	return most
}
