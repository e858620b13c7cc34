package accounting

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"nanogate/config"
	"nanogate/internal/safemath"
)

// extremes are counts where wrapping arithmetic breaks.
var extremes = []int64{0, 1, -1, -5, 1290, 1e12, 1 << 40, 3*(1<<61) - 1290, 432345564227567616,
	math.MaxInt64, math.MaxInt64 - 1, math.MinInt64}

func anyOf(r *rand.Rand, xs []int64) int64 {
	if r.IntN(4) == 0 {
		return r.Int64() - r.Int64()
	}
	return xs[r.IntN(len(xs))]
}

// TestPropertyCostIsNeverNegativeNorWrapped: for any counts, prices up to
// the configuration's bound included, a cost is at least the images' floor
// (per_image × images, saturated), never negative, and grows with every
// count: what overflows stops at the largest int64 instead of wrapping.
func TestPropertyCostIsNeverNegativeNorWrapped(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	prices := []float64{0, 0.000001, 0.039, 0.134, 30, 120, config.MaxPriceUSD}
	for i := range 20000 {
		p := config.Price{PerImage: prices[rng.IntN(len(prices))], InputPerMTok: prices[rng.IntN(len(prices))],
			OutputPerMTok: prices[rng.IntN(len(prices))]}
		img, prompt, text := anyOf(rng, extremes), anyOf(rng, extremes), anyOf(rng, extremes)
		c := Cost(p, img, prompt, text)
		floor := safemath.Mul(max(img, 0), p.PerImageMicros())
		if c < 0 || c < floor {
			t.Fatalf("step %d: Cost(%+v, %d, %d, %d) = %d, floor %d", i, p, img, prompt, text, c, floor)
		}
		for _, more := range [][3]int64{{img + 1, prompt, text}, {img, prompt + 1, text}, {img, prompt, text + 1}} {
			if more[0] < img || more[1] < prompt || more[2] < text {
				continue // the +1 itself wrapped
			}
			if c2 := Cost(p, more[0], more[1], more[2]); c2 < c {
				t.Fatalf("step %d: Cost fell from %d to %d for one more of %v", i, c, c2, more)
			}
		}
	}
}

// TestPropertyEstimateCoversTheImagesFloor: a reservation for n images is
// never below n times the dearest per-image price of the providers that may
// serve it, whatever the token counts.
func TestPropertyEstimateCoversTheImagesFloor(t *testing.T) {
	p := NewPricer(testConfig())
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 20000 {
		n := anyOf(rng, extremes)
		prompt, text := anyOf(rng, extremes), anyOf(rng, extremes)
		est := p.Estimate(previewModel, "", n, prompt, text)
		floor := safemath.Mul(max(n, 0), 39_000) // google's $0.039 is the dearer
		if est < floor || est < 0 {
			t.Fatalf("step %d: Estimate(%d images, %d, %d) = %d below the floor %d", i, n, prompt, text, est, floor)
		}
	}
}

// testExtremeReservations drives Reserve with random extreme estimates,
// team and key budgets (either, both) up to the configuration's bound and
// releases, against a model of the reservations: every granted reservation
// keeps spent + reserved within each budget it was checked against, the
// others' reservations it reports are the model's, and a refusal changes
// nothing.
func testExtremeReservations(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	budgets := []float64{0.000001, 0.10, 1, 1000, config.MaxBudgetUSD, math.Inf(1), math.MaxFloat64, math.NaN()}
	type held struct {
		key    string // "" when no key budget was checked
		micros int64
	}
	model := map[[2]string]held{} // (team, id) -> what it holds
	others := func(team, id, key string) (sum, keySum int64) {
		for k, h := range model {
			if k[0] == team && k[1] != id {
				sum += h.micros
				if key != "" && h.key == key {
					keySum += h.micros
				}
			}
		}
		return sum, keySum
	}
	budget := func() *config.Budget {
		if rng.IntN(3) == 0 {
			return nil
		}
		return &config.Budget{USD: budgets[rng.IntN(len(budgets))], Period: "total"}
	}
	for i := range 600 {
		team := fmt.Sprintf("team%d", rng.IntN(3))
		id := fmt.Sprintf("r%d", rng.IntN(20))
		before, err := s.Reserved(ctx, team, "")
		if err != nil {
			t.Fatal(err)
		}
		if rng.IntN(4) == 0 {
			if err := s.Release(ctx, Reservation{ID: id, Team: team}); err != nil {
				t.Fatal(err)
			}
			delete(model, [2]string{team, id})
			continue
		}
		a := Ask{ID: id, Team: team, Budget: budget(), Key: fmt.Sprintf("k%d", rng.IntN(2)), KeyBudget: budget(),
			Micros: anyOf(rng, extremes)}
		r, err := s.Reserve(ctx, a)
		after, err2 := s.Reserved(ctx, team, "")
		if err2 != nil {
			t.Fatal(err2)
		}
		sum, keySum := others(team, id, r.Key)
		switch {
		case a.Budget == nil && a.KeyBudget == nil:
			if err != nil || after != before {
				t.Fatalf("step %d: an ask without budgets: %v, reserved %d -> %d", i, err, before, after)
			}
		case err == nil:
			if r.Micros < 0 || (a.Micros > 0 && r.Micros != a.Micros) {
				t.Fatalf("step %d: granted %d for an estimate of %d", i, r.Micros, a.Micros)
			}
			if a.Budget != nil && (r.ReservedMicros != sum || after > r.BudgetMicros) {
				t.Fatalf("step %d: granted %+v: others hold %d, reserved %d of budget %d", i, r, sum, after, r.BudgetMicros)
			}
			if a.KeyBudget != nil && (r.KeyReservedMicros != keySum || keySum+r.Micros > r.KeyBudgetMicros) {
				t.Fatalf("step %d: granted %+v: the key's others hold %d", i, r, keySum)
			}
			if after != sum+r.Micros {
				t.Fatalf("step %d: reserved %d after a grant of %d over %d", i, after, r.Micros, sum)
			}
			model[[2]string{team, id}] = held{r.Key, r.Micros}
		case errors.Is(err, ErrBudgetExceeded):
			if after != before {
				t.Fatalf("step %d: a refusal changed the reserved sum from %d to %d", i, before, after)
			}
			if errors.Is(err, ErrKeyBudgetExceeded) != (a.Budget == nil || r.ReservedMicros+r.Micros <= r.BudgetMicros) {
				t.Fatalf("step %d: refusal %v for %+v", i, err, r)
			}
		default:
			t.Fatalf("step %d: Reserve(%+v): %v", i, a, err)
		}
	}
}

// FuzzCost checks Cost's invariants for any counts and any prices within the
// configuration's bounds.
func FuzzCost(f *testing.F) {
	f.Add(int64(2), int64(100), int64(20), 0.039, 0.30, 2.50)
	f.Add(int64(math.MaxInt64), int64(-5), int64(1e12), config.MaxPriceUSD, 120.0, 0.0)
	f.Fuzz(func(t *testing.T, img, prompt, text int64, perImage, in, out float64) {
		bound := func(v float64) float64 {
			if !(v >= 0) || v > config.MaxPriceUSD {
				return 0
			}
			return v
		}
		p := config.Price{PerImage: bound(perImage), InputPerMTok: bound(in), OutputPerMTok: bound(out)}
		c := Cost(p, img, prompt, text)
		if c < 0 || c < safemath.Mul(max(img, 0), p.PerImageMicros()) {
			t.Fatalf("Cost(%+v, %d, %d, %d) = %d", p, img, prompt, text, c)
		}
	})
}
