package ratelimit

import "math"

// The arithmetic of one bucket, in integers so that it is exact. Redis runs
// the same arithmetic in Lua (allow.lua, adjust.lua), whose numbers are
// doubles: every quantity stays below 2^53, where doubles are exact integers.
//
// A bucket of limit L per minute refills L tokens per 60 000 000 µs. With
// g = gcd(L, 60 000 000), one token is U = 60e6/g units and the refill is
// R = L/g units per µs, both integers; the capacity is L·U units. The state
// of a bucket is its level in units and the µs timestamp it was computed at;
// the level at a later time t is min(capacity, level + (t-ts)·R), and never
// below -capacity (a debt of one minute at most). A bucket
// that is full is the same as one never seen, so state is kept only while a
// bucket is below capacity (Redis keys expire when it would be full again).

const (
	minuteMicros = 60_000_000
	// maxUnits bounds capacities and debts, so that sums of two stay below
	// 2^53 in Lua.
	maxUnits = 1 << 52
	// MaxLimit is the largest per-minute limit; larger limits are clamped to
	// it (at 750 trillion per minute, a limit that never binds).
	MaxLimit = maxUnits / 6
)

// params are a bucket's constants for one limit.
type params struct {
	limit int64 // tokens per minute, as enforced (see effectiveLimit)
	unit  int64 // units per token
	rate  int64 // units per µs
	cap   int64 // capacity in units = limit·unit
}

// paramsFor returns the constants of a bucket of limit tokens per minute.
func paramsFor(limit int64) params {
	limit = effectiveLimit(limit)
	g := gcd(limit, minuteMicros)
	u := minuteMicros / g
	return params{limit: limit, unit: u, rate: limit / g, cap: limit * u}
}

// effectiveLimit returns limit, or for a limit whose capacity in units would
// not be exact in Lua (some limits above 75 million per minute), the limit
// rounded down to the fewest trailing zeros that make it exact: a relative
// error below 1e-6, for limits where one token is noise.
func effectiveLimit(limit int64) int64 {
	limit = min(limit, MaxLimit)
	for step := int64(10); !exact(limit); step *= 10 {
		limit = limit / step * step
	}
	return limit
}

func exact(limit int64) bool {
	return limit/gcd(limit, minuteMicros) <= maxUnits/minuteMicros
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// level returns the level at now of a bucket whose stored level lvl was
// computed at ts in units of unit per token, under params p.
func level(lvl, ts, unit, now int64, p *params) int64 {
	if unit != p.unit {
		// The limit changed (a config reload): keep the tokens, in the new
		// units. Floating point, as in Lua, so that both agree.
		lvl = int64(math.Floor(float64(lvl) / float64(unit) * float64(p.unit)))
	}
	// A debt owed under a larger limit (before a reload) is at most one
	// minute of the limit in force.
	lvl = max(lvl, -p.cap)
	if el := now - ts; el > 0 {
		if need := p.cap - lvl; el > need/p.rate {
			lvl = p.cap
		} else {
			lvl += el * p.rate
		}
	}
	return min(lvl, p.cap)
}

// check reports the state of a bucket at level lvl for a request of cost
// tokens, and whether the request fits.
func check(lvl, cost int64, p *params) (state, bool) {
	if cost > p.limit {
		return state{remaining: remaining(lvl, p), reset: ceilDiv(p.cap-lvl, p.rate), retry: -1}, false
	}
	st := state{remaining: remaining(lvl, p), reset: ceilDiv(p.cap-lvl, p.rate)}
	if c := cost * p.unit; lvl < c {
		st.retry = ceilDiv(c-lvl, p.rate)
		return st, false
	}
	return st, true
}

// charged is the state of a bucket at level lvl after charging it (the
// caller has checked that the cost fits).
func charged(lvl int64, p *params) state {
	return state{remaining: remaining(lvl, p), reset: ceilDiv(p.cap-lvl, p.rate)}
}

func remaining(lvl int64, p *params) int64 {
	if lvl <= 0 {
		return 0
	}
	return lvl / p.unit
}

// clampDelta bounds an Adjust delta so that delta·unit cannot overflow; any
// delta beyond it empties or fills a bucket anyway.
func clampDelta(delta int64, p *params) int64 {
	bound := 2 * maxUnits / p.unit
	return max(-bound, min(delta, bound))
}

// adjusted returns lvl corrected by delta tokens (a debt when positive),
// bounded by the capacity above and -capacity below: however much a request
// really used beyond its estimate, the debt is at most one minute's limit,
// so a bucket is full again within two minutes of its worst correction.
func adjusted(lvl, delta int64, p *params) int64 {
	lvl -= clampDelta(delta, p) * p.unit
	return max(-p.cap, min(lvl, p.cap))
}
