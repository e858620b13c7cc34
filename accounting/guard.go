package accounting

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"nanogate/internal/safemath"
)

// ErrStoreDown is the answer of a Guarded store whose backend failed
// recently and that has no local room to offer (on_outage closed).
var ErrStoreDown = errors.New("accounting: the budget store is unreachable")

// GuardOptions tune a Guarded store.
type GuardOptions struct {
	// Timeout bounds one budget check against the backend.
	Timeout time.Duration
	// Pause is how long the backend is left alone after it failed, before
	// one check tries it again.
	Pause time.Duration
	// Local admits reservations against what each team had left when the
	// backend was last reachable (on_outage open); false refuses them.
	Local bool
	// ReservationTTL expires local reservations no record settled.
	ReservationTTL time.Duration
	// OnLocal counts a reservation made locally; nil: not counted.
	OnLocal func()
}

// Guarded wraps the store that holds budgets (Redis) so that its outage
// never stalls a request: every budget check is bounded by Timeout, and
// after a failure the backend is left alone for Pause, the checks answered
// locally meanwhile. Locally, a team (and a key with a budget of its own)
// may reserve up to what it had left at its last check against the backend
// (its whole budget when it had none yet): during an outage each replica can overspend a budget by at most
// that. Records still go to the backend (the recorder spools them while it
// is down); a record drops the local reservation of its id.
type Guarded struct {
	Store
	o GuardOptions

	downUntil atomic.Int64 // unix ns; 0: up

	mu      sync.Mutex
	left    map[string]int64  // team -> micros left at its last backend check
	keyLeft map[teamKey]int64 // the same for a key's own budget
	local   map[string]localResv
}

type teamKey struct{ team, key string }

type localResv struct {
	team, key string // key: set when the key's own budget was checked
	micros    int64
	expires   time.Time
}

// NewGuarded wraps s.
func NewGuarded(s Store, o GuardOptions) *Guarded {
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	if o.Pause <= 0 {
		o.Pause = 2 * time.Second
	}
	if o.ReservationTTL <= 0 {
		o.ReservationTTL = DefaultReservationTTL
	}
	return &Guarded{Store: s, o: o, left: map[string]int64{}, keyLeft: map[teamKey]int64{}, local: map[string]localResv{}}
}

// Down reports whether the backend is being left alone after a failure.
func (g *Guarded) Down() bool { return time.Now().UnixNano() < g.downUntil.Load() }

// Reserve implements Store.
func (g *Guarded) Reserve(ctx context.Context, a Ask) (Reservation, error) {
	if g.Down() {
		return g.reserveDown(&a)
	}
	cctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	r, err := g.Store.Reserve(cctx, a)
	cancel()
	return g.answered(ctx, r, err, &a)
}

// answered takes the backend's answer to a reservation (ctx is the
// caller's): a budget decision updates what the team and the key have
// left; a failure leaves the backend alone for Pause and reserves locally.
func (g *Guarded) answered(ctx context.Context, r Reservation, err error, a *Ask) (Reservation, error) {
	if err == nil || errors.Is(err, ErrBudgetExceeded) {
		g.downUntil.Store(0)
		held := int64(0)
		if err == nil {
			held = r.Micros
		}
		g.mu.Lock()
		if r.Period != "" {
			g.left[r.Team] = max(safemath.Sub(r.BudgetMicros, safemath.Sum(r.SpentMicros, r.ReservedMicros, held)), 0)
		}
		if r.Key != "" {
			g.keyLeft[teamKey{r.Team, r.Key}] = max(safemath.Sub(r.KeyBudgetMicros, safemath.Sum(r.KeySpentMicros, r.KeyReservedMicros, held)), 0)
		}
		g.mu.Unlock()
		return r, err
	}
	if ctx.Err() != nil {
		return r, err
	}
	g.downUntil.Store(time.Now().Add(g.o.Pause).UnixNano())
	return g.reserveDown(a)
}

// reserveDown answers while the backend is left alone.
func (g *Guarded) reserveDown(a *Ask) (Reservation, error) {
	if !g.o.Local {
		return Reservation{ID: a.ID, Team: a.Team}, ErrStoreDown
	}
	return g.reserveLocal(a)
}

func (g *Guarded) reserveLocal(a *Ask) (Reservation, error) {
	now := time.Now()
	r := newReservation(a, now)
	if !r.budgeted() {
		return r, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var held, keyHeld int64
	for id, lr := range g.local {
		switch {
		case !now.Before(lr.expires):
			delete(g.local, id)
		case lr.team == a.Team && id != a.ID:
			held = safemath.Add(held, lr.micros)
			if r.Key != "" && lr.key == r.Key {
				keyHeld = safemath.Add(keyHeld, lr.micros)
			}
		}
	}
	if r.Period != "" {
		left, seen := g.left[a.Team]
		if !seen {
			left = r.BudgetMicros
		}
		r.SpentMicros, r.ReservedMicros = safemath.Sub(r.BudgetMicros, left), held
	}
	if r.Key != "" {
		left, seen := g.keyLeft[teamKey{a.Team, r.Key}]
		if !seen {
			left = r.KeyBudgetMicros
		}
		r.KeySpentMicros, r.KeyReservedMicros = safemath.Sub(r.KeyBudgetMicros, left), keyHeld
	}
	if err := r.over(); err != nil {
		return r, err
	}
	g.local[a.ID] = localResv{team: a.Team, key: r.Key, micros: r.Micros, expires: now.Add(g.o.ReservationTTL)}
	if g.o.OnLocal != nil {
		g.o.OnLocal()
	}
	return r, nil
}

// Release implements Store: a local reservation is dropped here; one made
// on the backend is released there, within Timeout.
func (g *Guarded) Release(ctx context.Context, r Reservation) error {
	g.mu.Lock()
	_, local := g.local[r.ID]
	delete(g.local, r.ID)
	g.mu.Unlock()
	if local || g.Down() {
		return nil // a backend reservation left behind expires by its TTL
	}
	cctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	return g.Store.Release(cctx, r)
}

// Apply implements Store: the record settles its local reservation, if any,
// and goes to the backend.
func (g *Guarded) Apply(ctx context.Context, rec Record) (bool, error) {
	g.drop(rec.ID)
	return g.Store.Apply(ctx, rec)
}

// ApplyBatch implements Store.
func (g *Guarded) ApplyBatch(ctx context.Context, recs []Record) (int, error) {
	for i := range recs {
		g.drop(recs[i].ID)
	}
	return g.Store.ApplyBatch(ctx, recs)
}

func (g *Guarded) drop(id string) {
	g.mu.Lock()
	delete(g.local, id)
	g.mu.Unlock()
}
