// Package ratelimit decides whether a request may pass the RPM and TPM limits
// of its key and its team (README: Rate limits), in one atomic step per request.
//
// Every limit is a token bucket refilled continuously: capacity = the
// per-minute limit, refill = limit/60 per second. All the limits that apply to
// a request (key RPM, key TPM, team RPM, team TPM) are checked and charged
// together: the request is admitted only if every one has room, and then all
// are charged; a refusal charges nothing. A request costs 1 on each RPM bucket
// and its estimated Tokens on each TPM bucket; Adjust corrects the TPM buckets
// to the real usage once the response is done. Batch lines (Request.Batch)
// also pass batch-only buckets holding a share of each limit, in the same
// step.
//
// Two implementations share these semantics and one test suite: Memory, for a
// single replica, and Redis, one Lua script per decision on a single node or a
// Redis Cluster, exact across any number of replicas. See README.md in this
// directory for the arithmetic, the outage policy and the over-capacity rule.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// Limits that apply to one request; 0 means no limit.
type Limits struct{ KeyRPM, KeyTPM, TeamRPM, TeamTPM int64 }

// Request is one admission question.
type Request struct {
	// Key and Team are names (never secrets). Team may be "": no team limits.
	Key, Team string
	Limits    Limits
	// Tokens is the estimate charged to the TPM buckets at admission
	// (negative counts as 0).
	Tokens int64
	// Batch marks a line of a batch (package batch). Besides the limits
	// above, the same atomic decision then checks and charges batch-only
	// buckets whose limits are Share × each limit (BatchLimits), so that
	// batches never take more than that share of a key's or team's rate and
	// interactive requests keep the rest. Interactive requests never touch
	// the batch buckets.
	Batch bool
	// Share is batch.max_share, in (0, 1). Batch requests with a Share of 0
	// or at least 1 have no batch-only buckets (they may use every limit in
	// full).
	Share float64
}

// BatchLimits returns the limits of the batch-only buckets of a batch
// request with share s of limits l: each limit times s, rounded down, at
// least 1 (a limit of 0 stays 0: no limit). A share outside (0, 1) gives no
// batch-only limits.
func BatchLimits(l Limits, s float64) Limits {
	if s <= 0 || s >= 1 {
		return Limits{}
	}
	part := func(limit int64) int64 {
		if limit <= 0 {
			return 0
		}
		return max(1, int64(float64(limit)*s))
	}
	return Limits{KeyRPM: part(l.KeyRPM), KeyTPM: part(l.KeyTPM), TeamRPM: part(l.TeamRPM), TeamTPM: part(l.TeamTPM)}
}

// batchLimits is BatchLimits of a request, zero unless it is a batch line.
func (r *Request) batchLimits() Limits {
	if !r.Batch {
		return Limits{}
	}
	return BatchLimits(r.Limits, r.Share)
}

// Result is the answer to a Request, with everything the x-ratelimit-*
// headers and a 429 need.
type Result struct {
	Allowed bool

	// LimitRequests, RemainingRequests and ResetRequests describe the
	// tightest request limit (the one with the least remaining), after this
	// decision; ResetRequests is the time until that bucket is full again.
	// A zero LimitRequests means no request limit is configured.
	LimitRequests, RemainingRequests int64
	ResetRequests                    time.Duration
	// LimitTokens, RemainingTokens and ResetTokens are the same for the
	// tightest token limit.
	LimitTokens, RemainingTokens int64
	ResetTokens                  time.Duration

	// RetryAfter is, when refused, the time until every refusing limit has
	// room for this request. It is 0 when the request can never pass (its
	// Tokens exceed a TPM limit): retrying the same request is pointless.
	RetryAfter time.Duration
	// Refused names the refusing limit: "key_rpm", "key_tpm", "team_rpm" or
	// "team_tpm", or for a batch request one of its batch-only buckets,
	// "batch_key_rpm" ... "batch_team_tpm". When several refuse, it is the
	// one that can never pass, else the one that makes the client wait the
	// longest.
	Refused string
	// Degraded is set when Redis could not decide (unreachable, or answering
	// an error) and the decision was made by the replica's local fallback
	// limiter (on_outage: open).
	Degraded bool
}

// Names of the limits, as found in Result.Refused.
const (
	RefusedKeyRPM  = "key_rpm"
	RefusedKeyTPM  = "key_tpm"
	RefusedTeamRPM = "team_rpm"
	RefusedTeamTPM = "team_tpm"

	RefusedBatchKeyRPM  = "batch_key_rpm"
	RefusedBatchKeyTPM  = "batch_key_tpm"
	RefusedBatchTeamRPM = "batch_team_rpm"
	RefusedBatchTeamTPM = "batch_team_tpm"
)

// ErrUnavailable is returned while Redis is unreachable and on_outage is
// "closed": the gateway answers 503 limiter_unavailable.
var ErrUnavailable = errors.New("ratelimit: redis unavailable")

// Limiter answers whether a request may pass its limits.
type Limiter interface {
	// Allow checks every limit of r and, if all have room, charges them all.
	Allow(ctx context.Context, r Request) (Result, error)
	// Adjust corrects the TPM buckets of key and team after the response by
	// delta tokens (real usage minus the estimate: positive is a debt that
	// may take the bucket below zero, negative a refund capped at capacity).
	// It never refuses. It runs off the response path (the caller calls it
	// after writing the response); its error only says the correction was
	// lost, and the caller may ignore it (Stats counts it).
	Adjust(ctx context.Context, r Request, delta int64) error
	// Stats returns the counters since the limiter was built.
	Stats() Stats
	Close() error
}

// Peeker reads the limits of a request without charging them: the figures
// a request of no cost would see, for the x-ratelimit-* headers of answers
// that do not go through admission (model lists, usage, files, requests
// refused before they were admitted). A peek is not a decision: Stats do
// not count it, and its Result's Allowed means nothing.
type Peeker interface {
	Peek(ctx context.Context, r Request) (Result, error)
}

// peekStates fills st with the state at level(i) of each bucket of pl for a
// request of no cost.
func peekStates(pl *plan, st *[numKinds]state, level func(i int) int64) {
	for i := 0; i < pl.n; i++ {
		st[i], _ = check(level(i), 0, &pl.p[i])
	}
}

// Stats are counters for /metrics.
type Stats struct {
	Decisions uint64 // Allow calls answered (allowed or refused, Redis or fallback)
	Refusals  uint64 // of which refused
	// Fallback counts decisions made by the local limiter because Redis was
	// unreachable (Degraded results).
	Fallback uint64
	// Unavailable counts decisions answered ErrUnavailable (on_outage: closed).
	Unavailable uint64
	// RedisErrors counts failed Redis round trips (decisions and adjustments).
	RedisErrors uint64
	Adjusts     uint64 // Adjust calls with a non-zero delta
	// Outages counts the times Redis was found unreachable after answering.
	Outages uint64
}

// kind is one of the four limits or, for batch requests, one of their four
// batch-only buckets, in the order they are checked and named.
type kind uint8

const (
	keyRPM kind = iota
	keyTPM
	teamRPM
	teamTPM
	batchKeyRPM
	batchKeyTPM
	batchTeamRPM
	batchTeamTPM
	numKinds
)

var kindNames = [numKinds]string{RefusedKeyRPM, RefusedKeyTPM, RefusedTeamRPM, RefusedTeamTPM,
	RefusedBatchKeyRPM, RefusedBatchKeyTPM, RefusedBatchTeamRPM, RefusedBatchTeamTPM}

func (k kind) tokens() bool {
	return k == keyTPM || k == teamTPM || k == batchKeyTPM || k == batchTeamTPM
}

// limitsByKind returns the limit of every kind for r (0: the bucket does
// not apply).
func limitsByKind(r *Request) [numKinds]int64 {
	b := r.batchLimits()
	return [numKinds]int64{r.Limits.KeyRPM, r.Limits.KeyTPM, r.Limits.TeamRPM, r.Limits.TeamTPM,
		b.KeyRPM, b.KeyTPM, b.TeamRPM, b.TeamTPM}
}

// plan lists the buckets a request touches, in kind order.
type plan struct {
	n     int
	kinds [numKinds]kind
	p     [numKinds]params
	cost  [numKinds]int64 // in tokens (1 for RPM)
}

func makePlan(r *Request) plan {
	var pl plan
	tokens := max(r.Tokens, 0)
	add := func(k kind, limit, cost int64) {
		if limit <= 0 {
			return
		}
		pl.kinds[pl.n], pl.p[pl.n], pl.cost[pl.n] = k, paramsFor(limit), cost
		pl.n++
	}
	add(keyRPM, r.Limits.KeyRPM, 1)
	add(keyTPM, r.Limits.KeyTPM, tokens)
	if r.Team != "" {
		add(teamRPM, r.Limits.TeamRPM, 1)
		add(teamTPM, r.Limits.TeamTPM, tokens)
	}
	if b := r.batchLimits(); b != (Limits{}) {
		add(batchKeyRPM, b.KeyRPM, 1)
		add(batchKeyTPM, b.KeyTPM, tokens)
		if r.Team != "" {
			add(batchTeamRPM, b.TeamRPM, 1)
			add(batchTeamTPM, b.TeamTPM, tokens)
		}
	}
	return pl
}

// tpmOnly narrows pl to its TPM buckets (what Adjust touches).
func (pl plan) tpmOnly() plan {
	var out plan
	for i := 0; i < pl.n; i++ {
		if pl.kinds[i].tokens() {
			out.kinds[out.n], out.p[out.n] = pl.kinds[i], pl.p[i]
			out.n++
		}
	}
	return out
}

// state is one bucket after a decision, in the units of the headers.
type state struct {
	remaining int64 // whole tokens left (0 when in debt)
	reset     int64 // µs until full again
	retry     int64 // µs until room for this request's cost; 0: room now; -1: never
}

// compose turns the buckets' states into a Result.
func compose(pl *plan, st *[numKinds]state, allowed bool) Result {
	res := Result{Allowed: allowed}
	refused := -1
	for i := 0; i < pl.n; i++ {
		s := &st[i]
		limit := pl.p[i].limit
		if pl.kinds[i].tokens() {
			if res.LimitTokens == 0 || s.remaining < res.RemainingTokens ||
				(s.remaining == res.RemainingTokens && micros(s.reset) > res.ResetTokens) {
				res.LimitTokens, res.RemainingTokens, res.ResetTokens = limit, s.remaining, micros(s.reset)
			}
		} else if res.LimitRequests == 0 || s.remaining < res.RemainingRequests ||
			(s.remaining == res.RemainingRequests && micros(s.reset) > res.ResetRequests) {
			res.LimitRequests, res.RemainingRequests, res.ResetRequests = limit, s.remaining, micros(s.reset)
		}
		if allowed || s.retry == 0 {
			continue
		}
		switch {
		case refused >= 0 && st[refused].retry < 0:
			// a limit that can never pass is already named
		case s.retry < 0 || refused < 0 || s.retry > st[refused].retry:
			refused = i
		}
	}
	if refused >= 0 {
		res.Refused = kindNames[pl.kinds[refused]]
		if st[refused].retry > 0 {
			res.RetryAfter = micros(st[refused].retry)
		}
	}
	return res
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
