package accounting

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"nanogate/config"
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
// locally meanwhile. Locally, a team may reserve up to what it had left at
// its last check against the backend (its whole budget when it had none
// yet): during an outage each replica can overspend a budget by at most
// that. Records still go to the backend (the recorder spools them while it
// is down); a record drops the local reservation of its id.
type Guarded struct {
	Store
	o GuardOptions

	downUntil atomic.Int64 // unix ns; 0: up

	mu    sync.Mutex
	left  map[string]int64 // team -> micros left at its last backend check
	local map[string]localResv
}

type localResv struct {
	team    string
	micros  int64
	expires time.Time
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
	return &Guarded{Store: s, o: o, left: map[string]int64{}, local: map[string]localResv{}}
}

// Down reports whether the backend is being left alone after a failure.
func (g *Guarded) Down() bool { return time.Now().UnixNano() < g.downUntil.Load() }

// Reserve implements Store.
func (g *Guarded) Reserve(ctx context.Context, team string, b config.Budget, id string, estimateMicros int64) (Reservation, error) {
	if g.Down() {
		return g.reserveDown(team, b, id, estimateMicros)
	}
	cctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	r, err := g.Store.Reserve(cctx, team, b, id, estimateMicros)
	cancel()
	return g.answered(ctx, r, err, team, b, id, estimateMicros)
}

// answered takes the backend's answer to a reservation (ctx is the
// caller's): a budget decision updates what the team has left; a failure
// leaves the backend alone for Pause and reserves locally.
func (g *Guarded) answered(ctx context.Context, r Reservation, err error, team string, b config.Budget, id string, estimateMicros int64) (Reservation, error) {
	if err == nil || errors.Is(err, ErrBudgetExceeded) {
		g.downUntil.Store(0)
		left := safemath.Sub(r.BudgetMicros, safemath.Sum(r.SpentMicros, r.ReservedMicros))
		if err == nil {
			left = safemath.Sub(left, r.Micros)
		}
		g.mu.Lock()
		g.left[team] = max(left, 0)
		g.mu.Unlock()
		return r, err
	}
	if ctx.Err() != nil {
		return r, err
	}
	g.downUntil.Store(time.Now().Add(g.o.Pause).UnixNano())
	return g.reserveDown(team, b, id, estimateMicros)
}

// reserveDown answers while the backend is left alone.
func (g *Guarded) reserveDown(team string, b config.Budget, id string, estimateMicros int64) (Reservation, error) {
	if !g.o.Local {
		return Reservation{ID: id, Team: team}, ErrStoreDown
	}
	return g.reserveLocal(team, b, id, estimateMicros)
}

func (g *Guarded) reserveLocal(team string, b config.Budget, id string, estimateMicros int64) (Reservation, error) {
	now := time.Now()
	r := newReservation(id, team, b, now, estimateMicros)
	g.mu.Lock()
	defer g.mu.Unlock()
	left, seen := g.left[team]
	if !seen {
		left = r.BudgetMicros
	}
	var held int64
	for k, lr := range g.local {
		switch {
		case !now.Before(lr.expires):
			delete(g.local, k)
		case lr.team == team && k != id:
			held = safemath.Add(held, lr.micros)
		}
	}
	r.SpentMicros, r.ReservedMicros = safemath.Sub(r.BudgetMicros, left), held
	if safemath.Add(held, r.Micros) > left {
		return r, ErrBudgetExceeded
	}
	g.local[id] = localResv{team, r.Micros, now.Add(g.o.ReservationTTL)}
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
