// Package metrics holds nanogate's Prometheus collectors. Labels are bounded:
// routes, statuses, provider and model names from the config; never a key, a
// team or anything a client can vary freely.
package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the set of collectors, registered on its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // route, status, provider, model
	RequestDuration *prometheus.HistogramVec // route
	Upstream        *prometheus.HistogramVec // provider, outcome
	Attempts        *prometheus.HistogramVec // route
	CircuitState    *prometheus.GaugeVec     // provider
	Transitions     *prometheus.CounterVec   // provider, to
	Images          *prometheus.CounterVec   // provider, model, size
	Tokens          *prometheus.CounterVec   // provider, model, kind
	CostMicros      *prometheus.CounterVec   // provider, model
	ClientGone      prometheus.Counter
	// Reloads counts configuration reloads by result (applied, refused).
	Reloads *prometheus.CounterVec
	// BudgetLocal counts budget reservations made locally while the
	// budget store (Redis) was unreachable.
	BudgetLocal prometheus.Counter
	// CostUSD is CostMicros in dollars, as a float counter; TeamRequests,
	// TeamImages and TeamCostUSD break requests, images and cost down by
	// team (teams come from the config: the label set is bounded).
	CostUSD      *prometheus.CounterVec // provider, model
	TeamRequests *prometheus.CounterVec // team, status
	TeamImages   *prometheus.CounterVec // team, provider
	TeamCostUSD  *prometheus.CounterVec // team, provider
	// UsageClamped counts upstream usage fields out of bounds, by provider
	// and field (prompt, text): a sign of a misbehaving upstream.
	UsageClamped *prometheus.CounterVec
	Panics       prometheus.Counter
	// BytesInFlight is what the requests in flight hold by the in-flight
	// bound's count (server.max_bytes_in_flight), BytesInFlightLimit the
	// bound (0: none), and Overloaded the requests it refused.
	BytesInFlight      prometheus.Gauge
	BytesInFlightLimit prometheus.Gauge
	Overloaded         prometheus.Counter

	BatchLines       *prometheus.CounterVec // outcome: this replica's finished batch lines
	BatchWaits       *prometheus.CounterVec // reason: batch lines held back by limits or budget
	BatchQueueDepth  prometheus.Gauge       // lines of active batches without an outcome
	BatchesActive    prometheus.Gauge
	BatchWorkersBusy prometheus.Gauge
}

// New creates and registers the collectors (with Go runtime and process ones).
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_requests_total", Help: "Requests answered, by route, HTTP status, serving provider and model.",
		}, []string{"route", "status", "provider", "model"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nanogate_request_duration_seconds", Help: "Time from request to the end of the answer, by route.",
			Buckets: []float64{.001, .005, .025, .1, .5, 1, 2.5, 5, 10, 20, 40, 80, 160},
		}, []string{"route"}),
		Upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nanogate_upstream_duration_seconds", Help: "Upstream attempt latency (to the answer or first stream event), by provider and outcome.",
			Buckets: []float64{.001, .005, .025, .1, .5, 1, 2.5, 5, 10, 20, 40, 80, 160},
		}, []string{"provider", "outcome"}),
		Attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nanogate_upstream_attempts", Help: "Providers tried per request.", Buckets: []float64{1, 2, 3, 4, 5},
		}, []string{"route"}),
		CircuitState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nanogate_circuit_state", Help: "Circuit of each provider: 0 healthy (closed), 1 open, 2 half_open.",
		}, []string{"provider"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_circuit_transitions_total", Help: "Circuit state changes, by provider and new state.",
		}, []string{"provider", "to"}),
		Images: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_images_total", Help: "Images generated and billed, by provider, model and image size (\"\" when unknown).",
		}, []string{"provider", "model", "size"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_tokens_total", Help: "Tokens billed, by provider, model and kind (prompt, text, image).",
		}, []string{"provider", "model", "kind"}),
		CostMicros: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_cost_microdollars_total", Help: "Cost at the serving provider's prices, in micro-dollars.",
		}, []string{"provider", "model"}),
		CostUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_cost_usd_total", Help: "Cost at the serving provider's prices, in USD.",
		}, []string{"provider", "model"}),
		TeamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_team_requests_total", Help: "Requests of each team's keys (\"none\" for keys without a team), by HTTP status.",
		}, []string{"team", "status"}),
		TeamImages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_team_images_total", Help: "Images billed to each team, by serving provider.",
		}, []string{"team", "provider"}),
		TeamCostUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_team_cost_usd_total", Help: "Cost billed to each team at the serving provider's prices, in USD, by provider.",
		}, []string{"team", "provider"}),
		UsageClamped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_upstream_usage_clamped_total",
			Help: "Upstream usage counts that were negative or beyond what the request could use, clamped before billing, by provider and field.",
		}, []string{"provider", "field"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_config_reloads_total", Help: "Configuration reloads (SIGHUP, -watch-config), by result: applied or refused.",
		}, []string{"result"}),
		BudgetLocal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanogate_budget_local_reservations_total",
			Help: "Budget reservations made by this replica alone while Redis was unreachable (on_outage: open).",
		}),
		ClientGone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanogate_client_disconnects_total", Help: "Requests whose client left before the answer was complete.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanogate_panics_total", Help: "Handler panics recovered into a 500.",
		}),
		BytesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanogate_bytes_in_flight", Help: "Bytes the requests in flight may hold: their bodies plus the images they asked for.",
		}),
		BytesInFlightLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanogate_bytes_in_flight_limit", Help: "server.max_bytes_in_flight in force; 0 when there is no bound.",
		}),
		Overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanogate_overloaded_total", Help: "Requests refused with 503 because the bytes in flight were at server.max_bytes_in_flight.",
		}),
		BatchLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_batch_lines_total",
			Help: "Batch lines this replica finished, by outcome (completed, failed, skipped); rate() is lines per second.",
		}, []string{"outcome"}),
		BatchWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanogate_batch_waits_total",
			Help: "Batch lines held back to wait for room instead of failing, by reason (rate_limit, budget, limiter, retry).",
		}, []string{"reason"}),
		BatchQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanogate_batch_queue_depth", Help: "Lines of active batches (every replica's) without an outcome yet.",
		}),
		BatchesActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanogate_batches_active", Help: "Batches that are neither finished nor failed.",
		}),
		BatchWorkersBusy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanogate_batch_workers_busy", Help: "Batch lines this replica is running now.",
		}),
	}
	r.MustRegister(m.Requests, m.RequestDuration, m.Upstream, m.Attempts, m.CircuitState, m.Transitions,
		m.Images, m.Tokens, m.CostMicros, m.CostUSD, m.TeamRequests, m.TeamImages, m.TeamCostUSD, m.UsageClamped, m.Reloads, m.BudgetLocal, m.ClientGone, m.Panics,
		m.BytesInFlight, m.BytesInFlightLimit, m.Overloaded,
		m.BatchLines, m.BatchWaits, m.BatchQueueDepth, m.BatchesActive, m.BatchWorkersBusy,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Status returns the label value of an HTTP status without allocating for the
// common ones.
func Status(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 429:
		return "429"
	case 502:
		return "502"
	}
	return strconv.Itoa(code)
}
