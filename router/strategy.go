package router

// Strategy orders the candidates of a request: a policy is one method, and
// adding one touches this file alone.
type Strategy interface {
	// Less reports whether a is tried before b.
	Less(a, b *ranked) bool
}

// ranked is a candidate with the figures strategies compare.
type ranked struct {
	c      *Candidate
	price  float64
	ewmaMS float64
}

// Cheapest tries the lowest per-image price first; recent latency breaks ties.
type Cheapest struct{}

// Less implements Strategy.
func (Cheapest) Less(a, b *ranked) bool {
	if a.price != b.price {
		return a.price < b.price
	}
	return fasterThan(a, b)
}

// Latency tries the provider with the lowest recent latency first; a
// provider without measurements yet is tried early so that it gets one.
type Latency struct{}

// Less implements Strategy.
func (Latency) Less(a, b *ranked) bool {
	if a.ewmaMS != b.ewmaMS {
		return fasterThan(a, b)
	}
	return a.price < b.price
}

func fasterThan(a, b *ranked) bool {
	switch {
	case a.ewmaMS == 0:
		return b.ewmaMS != 0
	case b.ewmaMS == 0:
		return false
	}
	return a.ewmaMS < b.ewmaMS
}

// StrategyFor returns the strategy named in the config.
func StrategyFor(name string) Strategy {
	if name == "latency" {
		return Latency{}
	}
	return Cheapest{}
}
