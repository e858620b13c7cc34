// Package accounting keeps nanogate's books: one usage Record per finished
// request, totals per team, key, model and provider for every day, month and
// all time, team budgets with in-flight reservations, and the usage reports
// of GET /v1/usage and GET /admin/usage (JSON and CSV).
//
// Money is integer micro-dollars everywhere (int64); it becomes USD only when
// a report is written, by formatting the integer as a decimal, so sums are
// exact whatever the number of records.
//
// Two Stores share one contract and one test suite: Redis (one Lua script per
// record, idempotent by record id, keys hash-tagged per team so that Redis
// Cluster works) and Memory (embedded, persisted append-only to a JSON-lines
// file and rebuilt from it on start). The Recorder sits in front of a Store:
// the gateway hands it records off the response path, and it spools them to
// a local file while the Store is unreachable and replays them, exactly once,
// when it is back.
//
// A record's totals: a request a provider served (Record.Provider set) counts
// in requests, its images, tokens and cost in the other totals; a request
// that no provider served (every attempt failed, Provider "") counts only in
// failed, and whatever usage it carries is ignored, so it never costs
// anything.
package accounting

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"nanogate/config"
	"nanogate/internal/safemath"
)

// Record is the usage of one finished request.
type Record struct {
	// ID is the request id; applying a record twice counts it once.
	ID   string    `json:"id"`
	Time time.Time `json:"time"` // when the request finished; it picks the day and month
	Key  string    `json:"key"`  // the key's name, never its secret
	Team string    `json:"team"` // "" for a key without a team
	// Model is the public model name the client asked for.
	Model string `json:"model"`
	// Size is the image size asked for (image_config.image_size: 512, 1K,
	// 2K, 4K); "" for the model's default.
	Size string `json:"size,omitempty"`
	// Provider is the provider that served the request, "" when none did
	// (every attempt failed): such a record counts in failed and costs
	// nothing.
	Provider string `json:"provider"`
	Attempts int    `json:"attempts"`
	Images   int64  `json:"images"`
	// PromptTokens are the input tokens of the serving provider.
	PromptTokens int64 `json:"prompt_tokens"`
	// TextTokens are the output tokens that are not images.
	TextTokens int64 `json:"text_tokens"`
	// ImageTokens are the output tokens of the images (the catalogue's per
	// image for the model and size, or billing.tokens_per_image), computed
	// by the caller.
	ImageTokens int64 `json:"image_tokens"`
	// CostMicros is what the serving provider charges (Cost at its price).
	CostMicros int64 `json:"cost_micros"`
	// ListCostMicros is the same usage at Google's official price
	// (Pricer.Cost); ListCostMicros - CostMicros is what routing saved.
	ListCostMicros int64 `json:"list_cost_micros"`
	Status         int   `json:"status"` // the HTTP status answered to the client
	Stream         bool  `json:"stream"`
}

// Failed reports whether no provider served the request.
func (r *Record) Failed() bool { return r.Provider == "" }

// Validate reports a record that can never be applied.
func (r *Record) Validate() error {
	switch {
	case r.ID == "":
		return errors.New("accounting: record without an id")
	case r.Time.IsZero():
		return fmt.Errorf("accounting: record %s without a time", r.ID)
	case r.Images < 0 || r.PromptTokens < 0 || r.TextTokens < 0 || r.ImageTokens < 0 ||
		r.CostMicros < 0 || r.ListCostMicros < 0:
		return fmt.Errorf("accounting: record %s with a negative count", r.ID)
	case len(r.Size) > 8 || strings.ContainsAny(r.Size, " |:"):
		return fmt.Errorf("accounting: record %s with an image size that is not one", r.ID)
	}
	return nil
}

// deltas is what the record adds to every total it touches, in the order of
// metricNames.
func (r *Record) deltas() [numMetrics]int64 {
	if r.Failed() {
		return [numMetrics]int64{mFailed: 1}
	}
	return [numMetrics]int64{
		mRequests:   1,
		mImages:     r.Images,
		mPrompt:     r.PromptTokens,
		mCompletion: safemath.Add(r.TextTokens, r.ImageTokens),
		mImageTok:   r.ImageTokens,
		mCost:       r.CostMicros,
		mListCost:   r.ListCostMicros,
	}
}

// Totals are the sums over a set of records.
type Totals struct {
	Requests int64 // records a provider served
	Failed   int64 // records no provider served (not billed)
	Images   int64
	// PromptTokens are input tokens.
	PromptTokens int64
	// CompletionTokens are text and image output tokens.
	CompletionTokens int64
	ImageTokens      int64
	CostMicros       int64
	ListCostMicros   int64
}

// Metric indices, shared by both stores; metricNames are their short names
// in Redis hash fields.
const (
	mRequests = iota
	mFailed
	mImages
	mPrompt
	mCompletion
	mImageTok
	mCost
	mListCost
	numMetrics
)

var metricNames = [numMetrics]string{"req", "fail", "img", "pt", "ct", "it", "cost", "list"}

func (t *Totals) ptr(m int) *int64 {
	switch m {
	case mRequests:
		return &t.Requests
	case mFailed:
		return &t.Failed
	case mImages:
		return &t.Images
	case mPrompt:
		return &t.PromptTokens
	case mCompletion:
		return &t.CompletionTokens
	case mImageTok:
		return &t.ImageTokens
	case mCost:
		return &t.CostMicros
	default:
		return &t.ListCostMicros
	}
}

func (t *Totals) addDeltas(d *[numMetrics]int64) {
	t.Requests = safemath.Add(t.Requests, d[mRequests])
	t.Failed = safemath.Add(t.Failed, d[mFailed])
	t.Images = safemath.Add(t.Images, d[mImages])
	t.PromptTokens = safemath.Add(t.PromptTokens, d[mPrompt])
	t.CompletionTokens = safemath.Add(t.CompletionTokens, d[mCompletion])
	t.ImageTokens = safemath.Add(t.ImageTokens, d[mImageTok])
	t.CostMicros = safemath.Add(t.CostMicros, d[mCost])
	t.ListCostMicros = safemath.Add(t.ListCostMicros, d[mListCost])
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	for m := range numMetrics {
		p := t.ptr(m)
		*p = safemath.Add(*p, *o.ptr(m))
	}
}

// Zero reports whether nothing was counted.
func (t Totals) Zero() bool { return t == Totals{} }

// Bucket holds one team's totals for one period, with its keys, models and
// providers.
type Bucket struct {
	Period    string // a day "2026-11-25", a month "2026-11" or "total"
	Team      Totals
	Keys      map[string]*Totals
	Models    map[string]*Totals
	Providers map[string]*Totals
	// Sizes are the totals of each model at each image size, by SizeKey.
	Sizes map[string]*Totals
}

// SizeKey names a model at an image size in Bucket.Sizes: the size, a
// space, the model (sizes hold no space; a model may).
func SizeKey(model, size string) string { return size + " " + model }

// SplitSizeKey is SizeKey's inverse.
func SplitSizeKey(k string) (model, size string) {
	size, model, _ = strings.Cut(k, " ")
	return model, size
}

func newBucket(period string) *Bucket {
	return &Bucket{Period: period, Keys: map[string]*Totals{}, Models: map[string]*Totals{},
		Providers: map[string]*Totals{}, Sizes: map[string]*Totals{}}
}

// add counts r in b, whose deltas d are; sizeKey is SizeKey(r.Model,
// r.Size) for a served record at a size, else empty. A failed record has no
// provider.
func (b *Bucket) add(r *Record, d *[numMetrics]int64, sizeKey []byte) {
	b.Team.addDeltas(d)
	addDeltasTo(b.Keys, r.Key, d)
	addDeltasTo(b.Models, r.Model, d)
	if r.Provider != "" {
		addDeltasTo(b.Providers, r.Provider, d)
	}
	if len(sizeKey) > 0 {
		t := b.Sizes[string(sizeKey)] // looked up without a copy
		if t == nil {
			t = &Totals{}
			b.Sizes[string(sizeKey)] = t
		}
		t.addDeltas(d)
	}
}

func addDeltasTo(m map[string]*Totals, name string, d *[numMetrics]int64) {
	t := m[name]
	if t == nil {
		t = &Totals{}
		m[name] = t
	}
	t.addDeltas(d)
}

// dim is the bucket's totals of one kind: 'k' keys, 'm' models, 's' sizes,
// else providers.
func (b *Bucket) dim(kind byte) map[string]*Totals {
	switch kind {
	case 'k':
		return b.Keys
	case 'm':
		return b.Models
	case 's':
		return b.Sizes
	default:
		return b.Providers
	}
}

// Ask is what a request sets aside: its estimated cost, against its team's
// budget, its key's own, or both. A budget left nil is not checked.
type Ask struct {
	ID        string
	Team      string
	Budget    *config.Budget // the team's
	Key       string         // the key's name, as records carry it
	KeyBudget *config.Budget // the key's own
	Micros    int64          // the estimate
}

// Reservation is money set aside for an in-flight request against its
// team's budget, its key's own budget, or both. Apply releases it when the
// request's record (same ID and team) arrives; one never settled expires
// after Options.ReservationTTL.
type Reservation struct {
	ID     string
	Team   string
	Micros int64 // the estimate set aside
	// Period is the team budget's period checked ("2026-11",
	// "2026-11-25", "total"); "" when the team has no budget.
	Period string
	// BudgetMicros, SpentMicros and ReservedMicros are the team's budget,
	// the spend of the period and the other reservations in flight when
	// the check ran, for messages and headers.
	BudgetMicros   int64
	SpentMicros    int64
	ReservedMicros int64
	// Key is set when the key's own budget was checked, and the Key
	// fields are the same figures for it: its spend is its records' cost
	// in its team's bucket of KeyPeriod, its reservations those made with
	// Key.
	Key               string
	KeyPeriod         string
	KeyBudgetMicros   int64
	KeySpentMicros    int64
	KeyReservedMicros int64
}

// ErrBudgetExceeded means a team's spend in its budget period, plus its
// in-flight reservations, plus the request's estimate would exceed its
// budget. The gateway answers 429 insufficient_quota with x-should-retry:
// false; it lasts until the period rolls over (UTC).
var ErrBudgetExceeded = errors.New("accounting: team budget exceeded")

// ErrKeyBudgetExceeded is ErrBudgetExceeded for a key's own budget; it
// matches ErrBudgetExceeded too.
var ErrKeyBudgetExceeded = fmt.Errorf("%w: the key's own budget", ErrBudgetExceeded)

// Store keeps totals and reservations. Both implementations pass one test
// suite (store_test.go).
type Store interface {
	// Apply adds a record to every total it touches and releases the
	// reservation of the record's team with the record's ID, in one atomic
	// step. A record whose ID was applied before (within Options.IDWindow)
	// changes nothing; applied reports whether it counted.
	Apply(ctx context.Context, rec Record) (applied bool, err error)
	// ApplyBatch applies records as Apply does, pipelined where the
	// backend can; on an error some may have been applied, and the batch
	// may be applied again as a whole.
	ApplyBatch(ctx context.Context, recs []Record) (applied int, err error)
	// Reserve checks the budgets a asks against and sets a.Micros aside
	// under a.ID, in one atomic step. Over the team's budget it returns
	// ErrBudgetExceeded, over the key's ErrKeyBudgetExceeded, with a
	// Reservation describing the check. Reserving an id again replaces its
	// previous estimate. An ask with no budget reserves nothing.
	Reserve(ctx context.Context, a Ask) (Reservation, error)
	// Release drops a reservation that no record will settle (a request
	// that ended before routing). Releasing twice is harmless.
	Release(ctx context.Context, r Reservation) error
	// Reserved is the sum of a team's unexpired reservations; with a key,
	// of those made against that key's own budget.
	Reserved(ctx context.Context, team, key string) (int64, error)
	// Read returns the team's bucket for each period, empty when nothing
	// was recorded.
	Read(ctx context.Context, team string, periods []string) ([]*Bucket, error)
	// Teams lists every team with recorded usage ("" for keys without a
	// team), sorted.
	Teams(ctx context.Context) ([]string, error)
	// Close flushes and releases what the store holds (never a client it
	// was given).
	Close() error
}

// Options tune both stores; the zero value takes the defaults.
type Options struct {
	// Now is the clock (time.Now): it picks the budget period of Reserve
	// and expires reservations. Tests set it: the store suite runs the
	// Redis store against a real redis-server at chosen dates (month and
	// day rollovers), which no synctest bubble can hold, and the embedded
	// store shares that suite.
	Now func() time.Time
	// ReservationTTL is how long a reservation that no record settles
	// counts against the budget (a crashed replica's).
	ReservationTTL time.Duration
	// IDWindow is how long after a record's day its id is remembered:
	// a replay within it counts once.
	IDWindow time.Duration
	// DayRetention is how long daily buckets are kept; monthly and total
	// ones are kept forever.
	DayRetention time.Duration
	// MaxIDs bounds the ids the embedded store remembers, whatever the
	// window: past it, the oldest are forgotten first, so that a busy
	// gateway's memory does not grow with its rate times IDWindow (about
	// 100 bytes an id: 8,000 records a second filled a gigabyte in 20
	// minutes). A replay of a forgotten id counts again. Redis keeps its
	// ids for the window.
	MaxIDs int
}

// Defaults of Options.
const (
	DefaultReservationTTL = 10 * time.Minute
	DefaultIDWindow       = 35 * 24 * time.Hour
	DefaultDayRetention   = 400 * 24 * time.Hour
	// DefaultMaxIDs is about 45 MiB of ids: three days at one record a
	// second, 25 s at 10,000.
	DefaultMaxIDs = 250_000
)

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReservationTTL <= 0 {
		o.ReservationTTL = DefaultReservationTTL
	}
	if o.IDWindow <= 0 {
		o.IDWindow = DefaultIDWindow
	}
	if o.DayRetention <= 0 {
		o.DayRetention = DefaultDayRetention
	}
	if o.MaxIDs <= 0 {
		o.MaxIDs = DefaultMaxIDs
	}
	return o
}

// PeriodTotal names the all-time period.
const PeriodTotal = "total"

// Day is t's UTC day as a period name, "2026-11-25".
func Day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Month is t's UTC month as a period name, "2026-11".
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

// BudgetPeriod is the period a budget of the given kind (daily, monthly,
// total) is checked against at now; an unknown kind is monthly, the
// default.
func BudgetPeriod(kind string, now time.Time) string {
	switch kind {
	case "daily":
		return Day(now)
	case "total":
		return PeriodTotal
	default:
		return Month(now)
	}
}

// PeriodEnd is when a budget of the given kind next rolls over after now
// (UTC midnight); the zero time for total.
func PeriodEnd(kind string, now time.Time) time.Time {
	now = now.UTC()
	y, m, d := now.Date()
	switch kind {
	case "daily":
		return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	case "total":
		return time.Time{}
	default:
		return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
	}
}

// periods are the buckets a record at t adds to: its day, month and total.
func periods(t time.Time) [3]string { return [3]string{Day(t), Month(t), PeriodTotal} }

// budgetMicros is the budget in micro-dollars, rounded as prices are.
func budgetMicros(b config.Budget) int64 {
	// Validation bounds budgets far below this; the clamp keeps a float
	// beyond int64 from converting to an arbitrary value.
	if !(b.USD > 0) { // NaN included
		return 0
	}
	return int64(math.Round(min(b.USD, config.MaxBudgetUSD) * 1e6))
}

// newReservation is a reservation of a's estimate against its budgets,
// with the estimate bounded to [0, smallest budget+1]: an estimate above a
// budget is refused anyway, and bounding it keeps every sum a store
// computes (Lua doubles included) exact.
func newReservation(a *Ask, now time.Time) Reservation {
	r := Reservation{ID: a.ID, Team: a.Team}
	bound := int64(math.MaxInt64)
	if a.Budget != nil {
		r.Period, r.BudgetMicros = BudgetPeriod(a.Budget.Period, now), budgetMicros(*a.Budget)
		bound = r.BudgetMicros
	}
	if a.KeyBudget != nil {
		r.Key, r.KeyPeriod, r.KeyBudgetMicros = a.Key, BudgetPeriod(a.KeyBudget.Period, now), budgetMicros(*a.KeyBudget)
		bound = min(bound, r.KeyBudgetMicros)
	}
	r.Micros = safemath.Clamp(a.Micros, 0, safemath.Add(bound, 1))
	return r
}

// budgeted reports whether the reservation checked any budget.
func (r *Reservation) budgeted() bool { return r.Period != "" || r.KeyPeriod != "" }

// over is the error of a check that found spent + reserved + the estimate
// above a budget, team first; nil when both hold.
func (r *Reservation) over() error {
	if r.Period != "" && safemath.Sum(r.SpentMicros, r.ReservedMicros, r.Micros) > r.BudgetMicros {
		return ErrBudgetExceeded
	}
	if r.KeyPeriod != "" && safemath.Sum(r.KeySpentMicros, r.KeyReservedMicros, r.Micros) > r.KeyBudgetMicros {
		return ErrKeyBudgetExceeded
	}
	return nil
}
