package ratelimit

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"nanogate/config"
)

var (
	//go:embed allow.lua
	allowLua string
	//go:embed adjust.lua
	adjustLua string

	allowScript  = newScript(allowLua)
	adjustScript = newScript(adjustLua)
)

// script is a Lua script sent as EVALSHA, and as EVAL when the server does
// not have it (NOSCRIPT: the script did not run, so sending it again is
// safe). Its arguments are boxed once, for allocation-free command building.
type script struct{ sha, src any }

func newScript(src string) script {
	sum := sha1.Sum([]byte(src))
	return script{sha: hex.EncodeToString(sum[:]), src: src}
}

// Boxed command words and small numbers, so that building a command does
// not allocate for them.
var (
	argEvalSHA any = "evalsha"
	argEval    any = "eval"
	argNumKeys     = [...]any{"0", "1", "2", "3", "4", "5", "6", "7", "8"}
	argOne     any = int64(1)
)

// argsPool holds the argument slices of commands, reused once a command has
// returned (go-redis keeps no reference to them).
var argsPool = sync.Pool{New: func() any { s := make([]any, 0, 3+5*numKinds); return &s }}

// probeInterval is how often Redis is tried again once it failed; meanwhile
// decisions go straight to the fallback (or ErrUnavailable) in microseconds.
const probeInterval = 200 * time.Millisecond

// NewClient returns the Redis client of cfg: a single-node client for one
// address (an address starting with "/" is a unix socket), a Redis Cluster
// client for several. It never retries a command by itself: a script that
// charges limits must not run twice because its reply was lost. Its reads,
// writes and waits for a pooled connection are each bounded by the decision
// timeout (or the read and write timeouts, when shorter): a decision passes
// the request's own context, so these bound how long an unresponsive Redis
// can hold it without a context per call.
func NewClient(cfg config.Redis) redis.UniversalClient {
	cfg = withDefaults(cfg)
	read, write := min(cfg.ReadTimeout, cfg.DecisionTimeout), min(cfg.WriteTimeout, cfg.DecisionTimeout)
	if len(cfg.Addrs) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 cfg.Addrs,
			Password:              cfg.Password,
			DialTimeout:           cfg.DialTimeout,
			ReadTimeout:           read,
			WriteTimeout:          write,
			PoolTimeout:           cfg.DecisionTimeout,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DialerRetries:         1,
			// No redirects either: the cluster client replays a command on
			// another node after a network error within its redirect loop.
			// Redis.Allow follows MOVED itself, where replaying is safe.
			MaxRedirects: -1,
		})
	}
	addr := ""
	if len(cfg.Addrs) == 1 {
		addr = cfg.Addrs[0]
	}
	return redis.NewClient(&redis.Options{
		Addr:                  addr,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		DialTimeout:           cfg.DialTimeout,
		ReadTimeout:           read,
		WriteTimeout:          write,
		PoolTimeout:           cfg.DecisionTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
	})
}

// withDefaults fills the zero fields of a config.Redis built in Go (Parse
// already applies config.Defaults).
func withDefaults(cfg config.Redis) config.Redis {
	if cfg.OnOutage == "" {
		cfg.OnOutage = "open"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = config.DefaultRedisDialTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = config.DefaultRedisReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = config.DefaultRedisWriteTimeout
	}
	if cfg.DecisionTimeout <= 0 {
		cfg.DecisionTimeout = config.DefaultRedisDecisionTimeout
	}
	return cfg
}

// Redis is the limiter shared by every replica: each decision is one Lua
// script (one round trip) that reads the time from Redis, checks every bucket
// of the request and charges them all or none. The buckets of one decision
// share the team's hash tag, so they live in one slot of a Redis Cluster
// while different teams spread over it.
//
// While Redis is unreachable, decisions follow cfg.OnOutage: "open" decides
// with a local Memory limiter with the same limits (Result.Degraded), and
// "closed" returns ErrUnavailable. After a failure, Redis is tried again by
// one request at most every 200 ms; the others do not wait for it.
type Redis struct {
	client   redis.UniversalClient
	scripts  [2]script // allow, adjust
	prefix   string
	timeout  time.Duration
	open     bool
	log      *zap.Logger
	fallback *Memory
	start    time.Time

	// Outage state, per hash slot on a cluster (a dead node takes only its
	// slots to the fallback) and in slots[0] on a single node: 0 while the
	// slot answers, else 1 + the time (ns since start) from which one
	// request may try Redis again.
	slots     []atomic.Int64
	downSlots atomic.Int64
	outageMu  sync.Mutex // orders the outage log lines
	downSince time.Time

	namesMu sync.RWMutex
	names   map[string]map[string]*keyNames // team -> key -> names and boxed arguments

	// now is nil but in tests, which replace the scripts by ones that read
	// the time from their last two arguments (seconds, µs) instead of TIME.
	// The decisions' clock is the Redis server's, which a synctest bubble
	// cannot move (nor hold a real server's I/O): the hook stays.
	now func() time.Time

	decisions, refusals, fallbackN, unavailable, redisErrors, adjusts, outages atomic.Uint64

	grp group // the admissions in flight, sent together (Admit)
}

// keyNames are the Redis keys of one (team, key) pair, by kind, and the index
// of their hash slot in Redis.slots; and, boxed for the script's arguments,
// the keys and the parameters of the limits they were last used with. A
// keyNames is immutable once published: new limits publish a new one.
type keyNames struct {
	key    [numKinds]string
	slot   int
	limits [numKinds]int64
	keyArg [numKinds]any
	params [numKinds][3]any // limit, unit, rate
}

// NewRedis returns a limiter on client (see NewClient) with cfg's key prefix,
// decision timeout and outage policy. logger may be nil.
func NewRedis(client redis.UniversalClient, cfg config.Redis, logger *zap.Logger) *Redis {
	cfg = withDefaults(cfg)
	if logger == nil {
		logger = zap.NewNop()
	}
	slots := 1
	if _, ok := client.(*redis.ClusterClient); ok {
		slots = numSlots
	}
	l := &Redis{
		client:   client,
		scripts:  [2]script{allowScript, adjustScript},
		prefix:   cfg.KeyPrefix,
		timeout:  cfg.DecisionTimeout,
		open:     cfg.OnOutage != "closed",
		log:      logger,
		fallback: NewMemory(),
		start:    time.Now(),
		slots:    make([]atomic.Int64, slots),
		names:    map[string]map[string]*keyNames{},
	}
	l.grp.l = l
	return l
}

// Allow implements Limiter.
func (l *Redis) Allow(ctx context.Context, r Request) (Result, error) {
	pl := makePlan(&r)
	if pl.n == 0 {
		l.decisions.Add(1)
		return Result{Allowed: true}, nil
	}
	names := l.keyNames(&r)
	slot := &l.slots[names.slot]
	if slot.Load() != 0 {
		return l.decide(ctx, &r, &pl, names, slot)
	}
	var d Pending
	l.Admit(r, &d, nil)
	return d.Result(ctx)
}

// Peek implements Peeker: one MGET of r's buckets, read at this replica's
// clock, nothing written. A slot in an outage answers at once, without a
// round trip, as its decisions do: from the local limiter with on_outage
// open, ErrUnavailable with closed.
func (l *Redis) Peek(ctx context.Context, r Request) (Result, error) {
	pl := makePlan(&r)
	if pl.n == 0 {
		return Result{Allowed: true}, nil
	}
	names := l.keyNames(&r)
	if l.slots[names.slot].Load() != 0 {
		if !l.open {
			return Result{}, ErrUnavailable
		}
		res, err := l.fallback.Peek(ctx, r)
		res.Degraded = true
		return res, err
	}
	var keys [numKinds]string
	for i := 0; i < pl.n; i++ {
		keys[i] = names.key[pl.kinds[i]]
	}
	vals, err := l.client.MGet(ctx, keys[:pl.n]...).Result()
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit: peek: %w", err)
	}
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	us := now.UnixMicro()
	var st [numKinds]state
	peekStates(&pl, &st, func(i int) int64 {
		p := &pl.p[i]
		if i < len(vals) {
			if s, ok := vals[i].(string); ok {
				if lvl, ts, unit, ok := parseBucket(s); ok {
					return level(lvl, ts, unit, us, p)
				}
			}
		}
		return p.cap // absent, or not a bucket's value: a full bucket, as the script reads it
	})
	return compose(&pl, &st, true), nil
}

// parseBucket reads a bucket's stored value, "level ts unit" (allow.lua).
func parseBucket(s string) (lvl, ts, unit int64, ok bool) {
	a, rest, ok1 := strings.Cut(s, " ")
	b, c, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	lvl, err1 = strconv.ParseInt(a, 10, 64)
	ts, err2 = strconv.ParseInt(b, 10, 64)
	unit, err3 = strconv.ParseInt(c, 10, 64)
	return lvl, ts, unit, err1 == nil && err2 == nil && err3 == nil && ts >= 0 && unit > 0
}

// Admit decides r in d together with the other admissions in flight (see
// group): one allow script for the group's decisions, in one pipeline
// with the commands each also adds (a budget reservation), and returns
// once it ran; d.Result then reads the decision. also, if not nil, joins
// the pipeline (Joiner), perhaps on another request's goroutine before
// Admit returns; its p is a pipeline of Client.
func (l *Redis) Admit(r Request, d *Pending, also Joiner) {
	l.grp.run(r, d, also)
}

// decide asks Redis for the decision of r, or answers locally while its
// slot is down. A decision normally runs on the caller's context, bounded
// by the client's timeouts; the probe that tries a down slot again also
// bounds its dial by the decision timeout.
func (l *Redis) decide(ctx context.Context, r *Request, pl *plan, names *keyNames, slot *atomic.Int64) (Result, error) {
	rctx := ctx
	if slot.Load() != 0 {
		if !l.mayTry(slot) {
			return l.degraded(r, pl, nil)
		}
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	res, err := l.eval(rctx, names, pl)
	return l.decided(ctx, r, pl, slot, res, err)
}

// decided takes Redis's answer to a decision (or the error that stood for
// one): the outage state follows it, and an outage decides locally.
func (l *Redis) decided(ctx context.Context, r *Request, pl *plan, slot *atomic.Int64, res Result, err error) (Result, error) {
	if err == nil {
		l.up(slot)
		l.decisions.Add(1)
		if !res.Allowed {
			l.refusals.Add(1)
		}
		return res, nil
	}
	l.redisErrors.Add(1)
	if ctx.Err() != nil {
		// The caller gave up (the client left): not Redis's fault.
		return Result{}, fmt.Errorf("ratelimit: %w", ctx.Err())
	}
	if outage(err) {
		l.failed(slot, err)
	}
	return l.degraded(r, pl, err)
}

// Pending is a decision that travels in a Redis pipeline with other
// commands (Redis.Queue), so that admitting a request costs one round trip
// whatever else it asks Redis. It is read once, by Result, after the
// pipeline ran.
type Pending struct {
	l     *Redis
	r     Request
	pl    plan
	names *keyNames
	slot  *atomic.Int64
	buf   *[]any     // the arguments of a decision queued alone
	cmd   *redis.Cmd // its group's script
	idx   int        // its place in the group
}

// Queue prepares the decision of r in d and adds its script to p, which
// must be a pipeline of Client. Nothing is queued when no limit applies or
// when r's slot is down (Result then probes Redis alone, or decides
// locally, as Allow does).
func (l *Redis) Queue(ctx context.Context, p redis.Pipeliner, r Request, d *Pending) {
	if !l.prepare(r, d) {
		return
	}
	d.buf = l.allowArgs(d.names, &d.pl)
	(*d.buf)[0], (*d.buf)[1] = argEvalSHA, l.scripts[0].sha
	d.cmd = p.Do(ctx, *d.buf...)
}

// prepare sets d up for r and reports whether its decision goes to Redis:
// not when no limit applies or r's slot is down.
func (l *Redis) prepare(r Request, d *Pending) bool {
	*d = Pending{l: l, r: r, pl: makePlan(&r)}
	if d.pl.n == 0 {
		return false
	}
	d.names = l.keyNames(&d.r)
	d.slot = &l.slots[d.names.slot]
	return d.slot.Load() == 0
}

// Result is the decision, once the pipeline ran; ctx is the caller's.
// Semantics, outage handling and Stats are Allow's.
func (d *Pending) Result(ctx context.Context) (Result, error) {
	l := d.l
	switch {
	case d.pl.n == 0:
		l.decisions.Add(1)
		return Result{Allowed: true}, nil
	case d.cmd == nil:
		return l.decide(ctx, &d.r, &d.pl, d.names, d.slot)
	}
	reply, err := replyAt(d.cmd, d.idx)
	d.cmd = nil
	if d.buf != nil {
		releaseArgs(d.buf)
		d.buf = nil
	}
	if err != nil && (redis.HasErrorPrefix(err, "NOSCRIPT") || redirected(err)) {
		// The script did not run: alone, it is loaded or follows the
		// cluster's new layout.
		return l.decide(ctx, &d.r, &d.pl, d.names, d.slot)
	}
	var res Result
	if err == nil {
		res, err = parseResult(reply, &d.pl)
	}
	return l.decided(ctx, &d.r, &d.pl, d.slot, res, err)
}

// Client is the client of the limiter's decisions, which never retries a
// command.
func (l *Redis) Client() redis.UniversalClient { return l.client }

// Pipeline returns a pipeline for Queue and other commands to the same
// Redis, on the limiter's client; Exec runs it.
func (l *Redis) Pipeline() redis.Pipeliner { return l.client.Pipeline() }

// Exec runs p on the caller's context, bounded by the client's timeouts
// (NewClient's decision timeout). Each command keeps its own error, which
// its reader (Pending.Result) handles.
func (l *Redis) Exec(ctx context.Context, p redis.Pipeliner) { p.Exec(ctx) }

// RedisOf returns the Redis limiter lim is or wraps (Coalescing), nil when
// it has none.
func RedisOf(lim Limiter) *Redis {
	for {
		switch v := lim.(type) {
		case *Redis:
			return v
		case interface{ Unwrap() Limiter }:
			lim = v.Unwrap()
		default:
			return nil
		}
	}
}

// Adjust implements Limiter. While Redis is unreachable the correction goes
// to the fallback limiter ("open") or is dropped with ErrUnavailable
// ("closed"); Adjust never probes Redis.
func (l *Redis) Adjust(ctx context.Context, r Request, delta int64) error {
	pl := makePlan(&r).tpmOnly()
	if delta == 0 || pl.n == 0 {
		return nil
	}
	l.adjusts.Add(1)
	names := l.keyNames(&r)
	slot := &l.slots[names.slot]
	if slot.Load() == 0 {
		err := l.evalAdjust(ctx, names, &pl, delta)
		if err == nil {
			return nil
		}
		l.redisErrors.Add(1)
		if ctx.Err() != nil {
			return fmt.Errorf("ratelimit: %w", ctx.Err())
		}
		if outage(err) {
			l.failed(slot, err)
		}
		if !l.open {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else if !l.open {
		return ErrUnavailable
	}
	l.fallback.adjust(&r, &pl, delta)
	return nil
}

// Stats implements Limiter.
func (l *Redis) Stats() Stats {
	return Stats{
		Decisions:   l.decisions.Load(),
		Refusals:    l.refusals.Load(),
		Fallback:    l.fallbackN.Load(),
		Unavailable: l.unavailable.Load(),
		RedisErrors: l.redisErrors.Load(),
		Adjusts:     l.adjusts.Load(),
		Outages:     l.outages.Load(),
	}
}

// Degraded reports whether Redis (or, on a cluster, some of its slots) is
// currently considered unreachable.
func (l *Redis) Degraded() bool { return l.downSlots.Load() > 0 }

// Ping checks that Redis answers, for /readyz. On a cluster it pings every
// master.
func (l *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(l.timeout, time.Second))
	defer cancel()
	if c, ok := l.client.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.Ping(ctx).Err()
		})
	}
	return l.client.Ping(ctx).Err()
}

// Close closes the Redis client.
func (l *Redis) Close() error { return l.client.Close() }

// degraded answers a request while Redis cannot: cause is the error that
// sent it here, nil when Redis was already known to be down.
func (l *Redis) degraded(r *Request, pl *plan, cause error) (Result, error) {
	if !l.open {
		l.unavailable.Add(1)
		if cause != nil {
			return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, cause)
		}
		return Result{}, ErrUnavailable
	}
	res := l.fallback.allow(r, pl)
	res.Degraded = true
	l.fallbackN.Add(1)
	l.decisions.Add(1)
	if !res.Allowed {
		l.refusals.Add(1)
	}
	return res, nil
}

func (l *Redis) sinceStart() int64 { return int64(time.Since(l.start)) }

// mayTry reports whether this request may go to Redis: always while its slot
// answers; during an outage, only the first request after probeInterval.
func (l *Redis) mayTry(slot *atomic.Int64) bool {
	next := slot.Load()
	if next == 0 {
		return true
	}
	now := l.sinceStart()
	return now+1 >= next && slot.CompareAndSwap(next, now+1+int64(probeInterval))
}

// failed records that Redis did not answer for slot; the first failure of an
// outage logs it. Slots go down and up under outageMu, so that downSlots
// counts them exactly.
func (l *Redis) failed(slot *atomic.Int64, err error) {
	next := l.sinceStart() + 1 + int64(probeInterval)
	if old := slot.Load(); old != 0 {
		slot.CompareAndSwap(old, max(old, next))
		return
	}
	l.outageMu.Lock()
	defer l.outageMu.Unlock()
	if !slot.CompareAndSwap(0, next) || l.downSlots.Add(1) != 1 {
		return
	}
	l.outages.Add(1)
	l.downSince = time.Now()
	policy := "deciding with a local limiter on each replica until it is back"
	if !l.open {
		policy = "refusing requests with 503 until it is back"
	}
	l.log.Warn("rate limiter: redis unreachable; "+policy, zap.Error(err))
}

// up records that Redis answered for slot; the answer that ends an outage
// logs it.
func (l *Redis) up(slot *atomic.Int64) {
	if slot.Load() == 0 {
		return
	}
	l.outageMu.Lock()
	defer l.outageMu.Unlock()
	for {
		old := slot.Load()
		if old == 0 {
			return // another request ended it
		}
		if slot.CompareAndSwap(old, 0) {
			break
		}
	}
	if l.downSlots.Add(-1) != 0 {
		return
	}
	l.log.Info("rate limiter: redis reachable again", zap.Duration("outage", time.Since(l.downSince)))
}

// outage reports whether err means Redis cannot answer (as opposed to an
// answer that is an error, such as a key of the wrong type).
func outage(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return true // network, timeout, pool, closed client
	}
	for _, p := range []string{"CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY", "NOAUTH", "WRONGPASS"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// redirected reports whether err is a cluster redirection: the script did
// not run, so running it again is safe.
func redirected(err error) bool {
	return err != nil && (redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") ||
		redis.HasErrorPrefix(err, "TRYAGAIN"))
}

// run runs a script with args (whose first two places it fills), following
// cluster redirections (whose topology the client reloads in the
// background) for up to the decision timeout: after a redirection or a
// NOSCRIPT the script did not run, so running it again is safe.
func (l *Redis) run(ctx context.Context, s script, args []any) *redis.Cmd {
	args[0], args[1] = argEvalSHA, s.sha
	var deadline time.Time
	for wait := 100 * time.Microsecond; ; wait *= 2 {
		cmd := l.client.Do(ctx, args...)
		err := cmd.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			args[0], args[1] = argEval, s.src
			cmd = l.client.Do(ctx, args...)
			err = cmd.Err()
			args[0], args[1] = argEvalSHA, s.sha
		}
		if !redirected(err) {
			return cmd
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(l.timeout)
		}
		wait = min(wait, time.Until(deadline))
		if wait <= 0 {
			return cmd
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return cmd
		case <-t.C:
		}
	}
}

// commandArgs starts the arguments of a script over the buckets of pl: two
// places for run, the number of keys, the keys.
func commandArgs(names *keyNames, pl *plan) *[]any {
	buf := argsPool.Get().(*[]any)
	a := append((*buf)[:0], nil, nil, argNumKeys[pl.n])
	for i := 0; i < pl.n; i++ {
		a = append(a, names.keyArg[pl.kinds[i]])
	}
	*buf = a
	return buf
}

func releaseArgs(buf *[]any) {
	clear(*buf)
	argsPool.Put(buf)
}

// allowArgs are the arguments of the allow script for one request, over
// pl's buckets: a group of one.
func (l *Redis) allowArgs(names *keyNames, pl *plan) *[]any {
	buf := commandArgs(names, pl)
	*buf = append(*buf, argNumKeys[1])
	*buf = appendDecision(*buf, names, pl, func(i int) any { return argNumKeys[i+1] })
	l.appendTime(buf)
	return buf
}

// appendDecision appends one request's part of the allow script's
// arguments: its number of buckets, then per bucket its key's index in
// KEYS (index(i) for pl's i-th bucket), limit, unit, rate and cost.
func appendDecision(args []any, names *keyNames, pl *plan, index func(i int) any) []any {
	args = append(args, argNumKeys[pl.n])
	var tokens any
	for i := 0; i < pl.n; i++ {
		k := pl.kinds[i]
		p := &names.params[k]
		cost := argOne
		if k.tokens() {
			if tokens == nil {
				tokens = pl.cost[i]
			}
			cost = tokens
		}
		args = append(args, index(i), p[0], p[1], p[2], cost)
	}
	return args
}

func (l *Redis) eval(ctx context.Context, names *keyNames, pl *plan) (Result, error) {
	buf := l.allowArgs(names, pl)
	cmd := l.run(ctx, l.scripts[0], *buf)
	releaseArgs(buf)
	reply, err := replyAt(cmd, 0)
	if err != nil {
		return Result{}, err
	}
	return parseResult(reply, pl)
}

// replyAt is the allow script's reply to the i-th request of its group.
func replyAt(cmd *redis.Cmd, i int) (string, error) {
	v, err := cmd.Slice()
	if err != nil {
		return "", err
	}
	if i >= len(v) {
		return "", fmt.Errorf("ratelimit: allow script returned %d replies, want at least %d", len(v), i+1)
	}
	reply, ok := v[i].(string)
	if !ok {
		return "", fmt.Errorf("ratelimit: allow script returned %T for a request", v[i])
	}
	return reply, nil
}

// parseResult reads the allow script's reply over pl's buckets.
func parseResult(reply string, pl *plan) (Result, error) {
	var st [numKinds]state
	allowed, ok := parseReply(reply, pl.n, &st)
	if !ok {
		return Result{}, fmt.Errorf("ratelimit: allow script returned %q for %d buckets", reply, pl.n)
	}
	return compose(pl, &st, allowed), nil
}

// appendTime appends the fake time of tests.
func (l *Redis) appendTime(buf *[]any) {
	if l.now != nil {
		t := l.now()
		*buf = append(*buf, t.Unix(), t.Nanosecond()/1000)
	}
}

// parseReply reads allow.lua's "allowed r1 s1 w1 ..." into st.
func parseReply(s string, n int, st *[numKinds]state) (allowed, ok bool) {
	next := func() (int64, bool) {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			i = len(s)
		}
		v, err := strconv.ParseInt(s[:i], 10, 64)
		s = s[min(i+1, len(s)):]
		return v, err == nil
	}
	a, ok := next()
	for i := 0; i < n && ok; i++ {
		var okR, okS, okW bool
		st[i].remaining, okR = next()
		st[i].reset, okS = next()
		st[i].retry, okW = next()
		ok = okR && okS && okW
	}
	return a == 1, ok && s == ""
}

func (l *Redis) evalAdjust(ctx context.Context, names *keyNames, pl *plan, delta int64) error {
	buf := commandArgs(names, pl)
	for i := 0; i < pl.n; i++ {
		p := &names.params[pl.kinds[i]]
		*buf = append(*buf, p[0], p[1], p[2])
	}
	// The script bounds the delta per bucket as clampDelta does.
	*buf = append(*buf, delta)
	l.appendTime(buf)
	err := l.run(ctx, l.scripts[1], *buf).Err()
	releaseArgs(buf)
	return err
}

// keyNames returns the Redis keys of r's buckets and the boxed arguments of
// its limits, built once per (team, key) and limits.
func (l *Redis) keyNames(r *Request) *keyNames {
	limits := limitsByKind(r)
	l.namesMu.RLock()
	n := l.names[r.Team][r.Key]
	l.namesMu.RUnlock()
	if n != nil && n.limits == limits {
		return n
	}
	if n == nil {
		n = bucketKeys(l.prefix, r.Team, r.Key)
		if len(l.slots) > 1 {
			n.slot = int(keySlot(n.key[keyRPM]))
		}
		for k, name := range n.key {
			n.keyArg[k] = name
		}
	} else {
		c := *n
		n = &c
	}
	n.limits = limits
	for k, limit := range limits {
		n.params[k] = [3]any{}
		if limit > 0 {
			p := paramsFor(limit)
			n.params[k] = [3]any{p.limit, p.unit, p.rate}
		}
	}
	l.namesMu.Lock()
	byKey := l.names[r.Team]
	if byKey == nil {
		byKey = map[string]*keyNames{}
		l.names[r.Team] = byKey
	}
	byKey[r.Key] = n
	l.namesMu.Unlock()
	return n
}

// bucketKeys names the buckets of key in team. The hash tag is the team's
// ({t:team}), or the key's own ({k:key}) for a key without a team, so that
// the buckets of one decision share a slot. Names are escaped so that no two
// (team, key) pairs share a Redis key whatever characters they hold. The
// batch-only buckets are the same names with a "b:" marker before the
// limit's name.
func bucketKeys(prefix, team, key string) *keyNames {
	var n keyNames
	if team == "" {
		base := prefix + "rl:{k:" + escape(key) + "}:"
		n.key[keyRPM], n.key[keyTPM] = base+"rpm", base+"tpm"
		n.key[batchKeyRPM], n.key[batchKeyTPM] = base+"b:rpm", base+"b:tpm"
		return &n
	}
	base := prefix + "rl:{t:" + escape(team) + "}:"
	n.key[teamRPM], n.key[teamTPM] = base+"rpm", base+"tpm"
	n.key[batchTeamRPM], n.key[batchTeamTPM] = base+"b:rpm", base+"b:tpm"
	kb := base + "k:" + escape(key) + ":"
	n.key[keyRPM], n.key[keyTPM] = kb+"rpm", kb+"tpm"
	n.key[batchKeyRPM], n.key[batchKeyTPM] = kb+"b:rpm", kb+"b:tpm"
	return &n
}

// escape %-encodes the characters that delimit parts of a bucket's key.
func escape(s string) string {
	if !strings.ContainsAny(s, "%:{}") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', ':', '{', '}':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
