package router

// strategy orders the candidates of a request (routing.strategy): a policy
// is one method, and adding one touches this file alone.
type strategy interface {
	// Less reports whether a is tried before b. The candidates are passed
	// by value: a pointer through an interface call would move them to the
	// heap.
	Less(a, b ranked) bool
}

// ranked is a candidate with the figures strategies compare.
type ranked struct {
	c      *Candidate
	price  float64
	ewmaMS float64
}

// cheapest tries the lowest per-image price first; recent latency breaks ties.
type cheapest struct{}

func (cheapest) Less(a, b ranked) bool {
	if a.price != b.price {
		return a.price < b.price
	}
	return fasterThan(a, b)
}

// latency tries the provider with the lowest recent latency first; a
// provider without measurements yet is tried early so that it gets one.
type latency struct{}

func (latency) Less(a, b ranked) bool {
	if a.ewmaMS != b.ewmaMS {
		return fasterThan(a, b)
	}
	return a.price < b.price
}

func fasterThan(a, b ranked) bool {
	switch {
	case a.ewmaMS == 0:
		return b.ewmaMS != 0
	case b.ewmaMS == 0:
		return false
	}
	return a.ewmaMS < b.ewmaMS
}

// strategyFor returns the strategy named in the config.
func strategyFor(name string) strategy {
	if name == "latency" {
		return latency{}
	}
	return cheapest{}
}
