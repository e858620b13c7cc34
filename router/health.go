package router

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"nanogate/config"
	"nanogate/provider"
)

// State is a provider's circuit state.
type State int32

// Circuit states.
const (
	Healthy  State = iota // closed: traffic flows
	Open                  // failing: no traffic until the cooldown ends
	HalfOpen              // one trial request is in flight
)

// String is the state's name as metrics and /admin/providers show it.
func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "healthy"
}

// latencyWindow is how many recent attempts the percentiles cover.
const latencyWindow = 256

// health is the passive health of one provider: a circuit breaker and recent
// latency, kept beside the provider and read when choosing (no health service
// to ask).
type health struct {
	name string

	mu           sync.Mutex
	state        State
	consecutive  int
	openUntil    time.Time
	benchedUntil time.Time // a 429 asked for a pause
	requests     int64
	failures     int64
	ewmaMS       float64
	lat          [latencyWindow]float32 // ring of recent latencies in ms
	latN         int
	lastError    string
	lastErrorAt  time.Time

	threshold int
	cooldown  time.Duration
	// maxBench caps how long an upstream's retry delay benches the provider.
	maxBench time.Duration
	log      *zap.Logger
	obs      observers
}

// observers are pre-resolved metric handles (no label lookups per request).
type observers struct {
	ok, fail     prometheus.Observer
	state        prometheus.Gauge
	toOpen       prometheus.Counter
	toHalfOpen   prometheus.Counter
	toHealthy    prometheus.Counter
	enabledStats bool
}

// allow reports whether a request may be sent now, and whether it is the
// one trial of a half-open circuit. Concurrent callers cannot both become
// the trial: the switch to half_open happens under the lock.
func (h *health) allow(now time.Time) (ok, trial bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Before(h.benchedUntil) {
		return false, false
	}
	switch h.state {
	case Healthy:
		return true, false
	case Open:
		if now.Before(h.openUntil) {
			return false, false
		}
		h.transition(HalfOpen, "cooldown over: one trial request")
		return true, true
	}
	return false, false // half open: the trial is in flight
}

// usable is allow without claiming anything (for /readyz and ordering).
func (h *health) usable(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Before(h.benchedUntil) {
		return false
	}
	return h.state == Healthy || (h.state == Open && !now.Before(h.openUntil))
}

// wait is how long until the provider may take a request: 0 when it may
// now. A half-open circuit's trial is in flight and decides soon: a second.
func (h *health) wait(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	until := h.benchedUntil
	switch h.state {
	case Open:
		if h.openUntil.After(until) {
			until = h.openUntil
		}
	case HalfOpen:
		if t := now.Add(time.Second); t.After(until) {
			until = t
		}
	}
	if !until.After(now) {
		return 0
	}
	return until.Sub(now)
}

// report records the outcome of an attempt.
func (h *health) report(now time.Time, trial bool, err error, took time.Duration) {
	ms := float64(took.Microseconds()) / 1000
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	h.lat[h.latN%latencyWindow] = float32(ms)
	h.latN++
	if h.ewmaMS == 0 {
		h.ewmaMS = ms
	} else {
		h.ewmaMS = 0.8*h.ewmaMS + 0.2*ms
	}
	pe, _ := provider.AsError(err)
	switch {
	case err == nil || (pe != nil && pe.Kind == provider.KindClient):
		// The provider answered; a request it refused is the client's doing.
		if h.obs.enabledStats {
			h.obs.ok.Observe(took.Seconds())
		}
		h.consecutive = 0
		if h.state != Healthy {
			h.transition(Healthy, "a request succeeded")
		}
	case pe != nil && pe.Kind == provider.KindCanceled:
		// Nothing learnt: a trial that was abandoned lets the next request try.
		if trial && h.state == HalfOpen {
			h.state = Open
			h.openUntil = now
			h.setGauge()
		}
	default:
		if h.obs.enabledStats {
			h.obs.fail.Observe(took.Seconds())
		}
		h.failures++
		h.consecutive++
		h.lastError = err.Error()
		h.lastErrorAt = now
		if pe != nil && pe.Kind == provider.KindRateLimited && pe.RetryAfter > 0 {
			d := min(pe.RetryAfter, h.maxBench)
			h.benchedUntil = now.Add(d)
			h.log.Warn("provider benched", zap.String("provider", h.name), zap.Duration("for", d),
				zap.Duration("asked", pe.RetryAfter))
		}
		switch {
		case trial || h.state == HalfOpen:
			h.openUntil = now.Add(h.cooldown)
			h.transition(Open, "trial failed")
		case h.state == Healthy && h.consecutive >= h.threshold:
			h.openUntil = now.Add(h.cooldown)
			h.transition(Open, "consecutive failures reached the threshold")
		}
	}
}

// transition changes state and says so once, in the log and the metrics.
func (h *health) transition(to State, why string) {
	from := h.state
	h.state = to
	h.log.Info("circuit", zap.String("provider", h.name), zap.String("from", from.String()),
		zap.String("to", to.String()), zap.String("why", why), zap.Int("consecutive_failures", h.consecutive))
	if h.obs.enabledStats {
		switch to {
		case Open:
			h.obs.toOpen.Inc()
		case HalfOpen:
			h.obs.toHalfOpen.Inc()
		default:
			h.obs.toHealthy.Inc()
		}
	}
	h.setGauge()
}

func (h *health) setGauge() {
	if h.obs.enabledStats {
		h.obs.state.Set(float64(h.state))
	}
}

// ewma returns the recent mean latency in ms (0 before any attempt).
func (h *health) ewma() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ewmaMS
}

// Status is a provider's health for /admin/providers.
type Status struct {
	Name        string              `json:"name"`
	Kind        config.ProviderKind `json:"kind"`
	State       string              `json:"state"`
	PerImageUSD float64             `json:"price_per_image_usd"`
	// PerImageUSDByModel is the price of an image of each public model the
	// provider maps, at the model's default size: what the cheapest
	// strategy ranks it by and usage bills (a model's own price, or the
	// catalogue's on the gemini kind), which may differ from PerImageUSD.
	PerImageUSDByModel  map[string]float64 `json:"price_per_image_usd_by_model,omitempty"`
	Requests            int64              `json:"requests"`
	Failures            int64              `json:"failures"`
	ConsecutiveFailures int                `json:"consecutive_failures"`
	P50MS               float64            `json:"p50_ms"`
	P99MS               float64            `json:"p99_ms"`
	LastError           string             `json:"last_error,omitempty"`
	LastErrorAt         string             `json:"last_error_at,omitempty"`
	// TrialInSeconds: for an open circuit, time until the trial request.
	TrialInSeconds float64 `json:"trial_in_seconds,omitempty"`
	// BenchedForSeconds: time left of a pause a 429 asked for.
	BenchedForSeconds float64 `json:"benched_for_seconds,omitempty"`
}

func (h *health) status(now time.Time) Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Status{Name: h.name, State: h.state.String(), Requests: h.requests, Failures: h.failures,
		ConsecutiveFailures: h.consecutive, LastError: h.lastError}
	if !h.lastErrorAt.IsZero() {
		s.LastErrorAt = h.lastErrorAt.UTC().Format(time.RFC3339)
	}
	if h.state == Open && now.Before(h.openUntil) {
		s.TrialInSeconds = h.openUntil.Sub(now).Seconds()
	}
	if now.Before(h.benchedUntil) {
		s.BenchedForSeconds = h.benchedUntil.Sub(now).Seconds()
	}
	n := min(h.latN, latencyWindow)
	if n > 0 {
		ls := make([]float64, n)
		for i := range ls {
			ls[i] = float64(h.lat[i])
		}
		sort.Float64s(ls)
		s.P50MS = ls[(n-1)*50/100]
		s.P99MS = ls[(n-1)*99/100]
	}
	return s
}
