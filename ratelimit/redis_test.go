package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"nanogate/config"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// testConfig is a Redis config for addrs. Its timeouts are generous: these
// tests are about exactness, and under the race detector a burst of hundreds
// of goroutines on two busy cores may wait longer than the default 50 ms for
// an answer (the outage tests use the defaults).
func testConfig(addrs ...string) config.Redis {
	return config.Redis{Addrs: addrs, KeyPrefix: "test:", OnOutage: "closed",
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		DecisionTimeout: 5 * time.Second}
}

// newTestRedis returns a limiter on its own client (a "replica"); the test
// fails if any of its decisions did not come from Redis.
func newTestRedis(t *testing.T, cfg config.Redis) *Redis {
	t.Helper()
	l := NewRedis(NewClient(cfg), cfg, nil)
	t.Cleanup(func() {
		if s := l.Stats(); s.Fallback != 0 || s.RedisErrors != 0 || s.Unavailable != 0 {
			t.Errorf("decisions not made by Redis: %+v", s)
		}
		l.Close()
	})
	return l
}

func redisBackend(cfg config.Redis) suite {
	return suite{new: func(t *testing.T) Limiter { return newTestRedis(t, cfg) }}
}

func TestRedis(t *testing.T) {
	srv := redistest.Start(t)
	runSuite(t, redisBackend(testConfig(srv.Addr)))
}

func TestRedisCluster(t *testing.T) {
	addrs := startCluster(t)
	runSuite(t, redisBackend(testConfig(addrs...)))
}

// TestTwoReplicasAdmitExactlyCapacity: two limiters on two clients (two
// gateway replicas) sharing one Redis, or one Redis Cluster, admit exactly L
// of a burst of 3L concurrent requests against full buckets of capacity L,
// for RPM and for TPM, for several teams at once.
func TestTwoReplicasAdmitExactlyCapacity(t *testing.T) {
	t.Run("SingleNode", func(t *testing.T) {
		srv := redistest.Start(t)
		twoReplicaBurst(t, testConfig(srv.Addr), 1)
	})
	t.Run("Cluster", func(t *testing.T) {
		addrs := startCluster(t)
		twoReplicaBurst(t, testConfig(addrs...), 6)
		// The teams spread over the cluster's nodes.
		used := 0
		for _, a := range addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			if n, err := c.DBSize(context.Background()).Result(); err == nil && n > 0 {
				used++
			}
			c.Close()
		}
		if used < 2 {
			t.Errorf("the buckets of 6 teams are on %d of 3 nodes, want them spread", used)
		}
	})
}

func twoReplicaBurst(t *testing.T, cfg config.Redis, teams int) {
	replicas := []*Redis{newTestRedis(t, cfg), newTestRedis(t, cfg)}
	const L = 100
	for _, tc := range []struct {
		name   string
		tokens int64
		limits Limits
	}{
		{"TeamRPM", 1, Limits{KeyRPM: 10 * L, TeamRPM: L}},
		{"TeamTPM", 1290, Limits{KeyRPM: 10 * L, TeamRPM: 10 * L, TeamTPM: L * 1290}},
		{"KeyRPM", 1, Limits{KeyRPM: L, TeamRPM: 10 * L}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admitted := make([]atomic.Int64, teams)
			var wg sync.WaitGroup
			start := time.Now()
			for team := range teams {
				for i := range 3 * L {
					r := Request{Team: fmt.Sprintf("%s-team%d", t.Name(), team), Key: "k", Tokens: tc.tokens, Limits: tc.limits}
					if tc.name != "KeyRPM" {
						r.Key = fmt.Sprint("k", i%7) // several keys share the team's limit
					}
					wg.Go(func() {
						res, err := replicas[i%2].Allow(context.Background(), r)
						if err != nil {
							t.Error(err)
						}
						if res.Allowed {
							admitted[team].Add(1)
						}
					})
				}
			}
			wg.Wait()
			// The bucket refills continuously (L/60 a second): on a loaded
			// machine a slow burst may rightly get a refilled request more.
			refill := int64(time.Since(start).Seconds() * L / 60)
			for team := range teams {
				if got := admitted[team].Load(); got < L || got > L+refill {
					t.Errorf("team %d: admitted %d of %d, want exactly %d (+%d refilled during the burst)", team, got, 3*L, L, refill)
				}
			}
		})
	}
}

// startCluster starts a 3-node Redis Cluster (one master per node, no
// replicas) and returns its addresses once every node reports it ok.
func startCluster(t *testing.T) []string {
	t.Helper()
	addrs := redistest.Addrs(redistest.StartCluster(t))
	// keySlot agrees with the cluster.
	c := redis.NewClient(&redis.Options{Addr: addrs[0]})
	defer c.Close()
	for _, key := range []string{"foo", "{user1000}.following", "bar{}x", "a{b", "x{}{y}", "test:rl:{t:design}:rpm", "é{ü}"} {
		want, err := c.ClusterKeySlot(context.Background(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(key); int64(got) != want {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", key, got, want)
		}
	}
	return addrs
}

// observed returns a logger whose warnings and infos the test can count.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(core), logs
}

func countLogs(logs *observer.ObservedLogs, level zapcore.Level) int {
	n := 0
	for _, e := range logs.All() {
		if e.Level == level {
			n++
		}
	}
	return n
}

// TestOutageOpen: with on_outage open, a Redis that dies mid-way leaves
// decisions succeeding, quickly, under the local limiter with the same
// limits, logging once; when Redis is back, decisions go to it again.
func TestOutageOpen(t *testing.T) {
	srv := redistest.Start(t)
	cfg := config.Redis{Addrs: []string{srv.Addr}, KeyPrefix: "test:", OnOutage: "open"} // default timeouts
	logger, logs := observed()
	l := NewRedis(NewClient(cfg), cfg, logger)
	defer l.Close()
	ctx := context.Background()
	busy := Request{Key: "busy", Team: "t", Limits: Limits{KeyRPM: 100000, TeamRPM: 100000}}
	small := Request{Key: "small", Team: "t", Limits: Limits{KeyRPM: 5}}

	if res := allow(t, l, busy); !res.Allowed || res.Degraded {
		t.Fatalf("before the outage: %+v", res)
	}
	srv.Kill()

	// Decisions in bursts until Redis was tried three times: the failure,
	// then two probes 200 ms apart.
	var slowest time.Duration
	n := 0
	poll.Until(t, 10*time.Second, "three tries of Redis during the outage", func() bool {
		for range 10 {
			start := time.Now()
			res, err := l.Allow(ctx, busy)
			slowest = max(slowest, time.Since(start))
			if err != nil || !res.Allowed || !res.Degraded {
				t.Fatalf("during the outage: %+v, %v", res, err)
			}
			n++
		}
		return l.Stats().RedisErrors >= 3
	})
	if slowest > time.Second {
		t.Errorf("a decision during the outage took %v", slowest)
	}
	// The local limiter enforces the same limits.
	if got := drain(t, l, small, 20); got != 5 {
		t.Errorf("local limiter admitted %d, want the key's 5", got)
	}
	// A peek reads what the decisions use: the local buckets, at once.
	tries := l.Stats().RedisErrors
	if res, err := l.Peek(ctx, small); err != nil || !res.Degraded || res.LimitRequests != 5 || res.RemainingRequests != 0 {
		t.Errorf("peek during the outage: %+v, %v; want the local bucket, 0 of 5 left", res, err)
	}
	if l.Stats().RedisErrors != tries {
		t.Error("a peek during the outage tried Redis")
	}
	if !l.Degraded() {
		t.Error("Degraded() = false during the outage")
	}
	if w := countLogs(logs, zapcore.WarnLevel); w != 1 {
		t.Errorf("%d warnings for one outage of %d decisions, want 1", w, n)
	}
	s := l.Stats()
	if s.Outages != 1 || s.Fallback < uint64(n) || s.RedisErrors == 0 || s.RedisErrors > uint64(n)/10 {
		t.Errorf("Stats after %d decisions in an outage: %+v (want Redis tried only every 200 ms)", n, s)
	}

	srv.Restart()
	waitForRedis(t, l, busy)
	if i := countLogs(logs, zapcore.InfoLevel); i != 1 {
		t.Errorf("%d infos when Redis came back, want 1", i)
	}
	if l.Degraded() {
		t.Error("Degraded() = true after Redis came back")
	}
	t.Logf("outage: %d decisions, slowest %v; %+v", n, slowest, l.Stats())
}

// waitForRedis waits until a decision comes from Redis again.
func waitForRedis(t *testing.T, l *Redis, r Request) {
	t.Helper()
	poll.Until(t, 5*time.Second, "a decision from Redis after it came back", func() bool {
		res, err := l.Allow(context.Background(), r)
		return err == nil && !res.Degraded
	})
}

// TestOutageClosed: with on_outage closed, decisions fail fast with
// ErrUnavailable while Redis is down, and succeed again when it is back.
func TestOutageClosed(t *testing.T) {
	srv := redistest.Start(t)
	cfg := config.Redis{Addrs: []string{srv.Addr}, OnOutage: "closed"}
	logger, logs := observed()
	l := NewRedis(NewClient(cfg), cfg, logger)
	defer l.Close()
	r := Request{Key: "k", Tokens: 100, Limits: Limits{KeyRPM: 1000, KeyTPM: 1e6}}
	allow(t, l, r)
	srv.Kill()
	// Decisions in bursts until Redis was tried three times: the failure,
	// then two probes 200 ms apart.
	var slowest time.Duration
	n := 0
	poll.Until(t, 10*time.Second, "three tries of Redis during the outage", func() bool {
		for range 10 {
			start := time.Now()
			_, err := l.Allow(context.Background(), r)
			slowest = max(slowest, time.Since(start))
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Allow during the outage: %v, want ErrUnavailable", err)
			}
			if err := l.Adjust(context.Background(), r, 10); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Adjust during the outage: %v, want ErrUnavailable", err)
			}
			n++
		}
		return l.Stats().RedisErrors >= 3
	})
	if slowest > 200*time.Millisecond {
		t.Errorf("a refusal during the outage took %v", slowest)
	}
	if _, err := l.Peek(context.Background(), r); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Peek during the outage: %v, want ErrUnavailable", err)
	}
	if w := countLogs(logs, zapcore.WarnLevel); w != 1 {
		t.Errorf("%d warnings, want 1", w)
	}
	srv.Restart()
	waitForRedis(t, l, r)
	if s := l.Stats(); s.Unavailable < uint64(n) {
		t.Errorf("Stats after %d refusals: %+v", n, s)
	}
}

// TestUnresponsiveRedisIsBounded: a Redis that accepts connections and never
// answers (a hung server, a black hole) costs a decision at most its
// decision_timeout, and only one request per probe interval pays it.
func TestUnresponsiveRedisIsBounded(t *testing.T) {
	addr := silentServer(t)
	for _, policy := range []string{"open", "closed"} {
		cfg := config.Redis{Addrs: []string{addr}, OnOutage: policy}
		l := NewRedis(NewClient(cfg), cfg, nil)
		var times []time.Duration
		for range 50 {
			start := time.Now()
			res, err := l.Allow(context.Background(), Request{Key: "k", Limits: Limits{KeyRPM: 10}})
			times = append(times, time.Since(start))
			if policy == "open" && (err != nil || !res.Degraded) {
				t.Fatalf("open: %+v, %v", res, err)
			}
			if policy == "closed" && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("closed: %v", err)
			}
		}
		slices.Sort(times)
		if times[len(times)-1] > time.Second || times[len(times)/2] > 10*time.Millisecond {
			t.Errorf("%s: decision times median %v, max %v", policy, times[len(times)/2], times[len(times)-1])
		}
		l.Close()
	}
}

// TestReplyErrorIsNotAnOutage: an error answered by Redis (here: out of
// memory) fails that decision alone, decided locally, without taking Redis
// for down: it answers, so trying it costs no waiting.
func TestReplyErrorIsNotAnOutage(t *testing.T) {
	srv := redistest.Start(t)
	cfg := config.Redis{Addrs: []string{srv.Addr}, KeyPrefix: "p:", OnOutage: "open"}
	logger, logs := observed()
	l := NewRedis(NewClient(cfg), cfg, logger)
	defer l.Close()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	r := Request{Key: "k", Limits: Limits{KeyRPM: 10}}
	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if res := allow(t, l, r); !res.Degraded || !res.Allowed {
			t.Errorf("decision while Redis refuses writes: %+v, want it decided locally", res)
		}
	}
	if l.Degraded() || countLogs(logs, zapcore.WarnLevel) != 0 {
		t.Error("an error reply was taken for an outage")
	}
	if s := l.Stats(); s.RedisErrors != 3 || s.Fallback != 3 {
		t.Errorf("Stats: %+v, want every decision tried in Redis", s)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if res := allow(t, l, r); res.Degraded || !res.Allowed {
		t.Errorf("decision after: %+v", res)
	}
}

// TestForeignValueIsAFullBucket: a bucket key holding something else (a
// value of another type or format) counts as a full bucket and is replaced.
func TestForeignValueIsAFullBucket(t *testing.T) {
	srv := redistest.Start(t)
	cfg := config.Redis{Addrs: []string{srv.Addr}, KeyPrefix: "p:"}
	l := newTestRedis(t, cfg)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	c.HSet(ctx, "p:rl:{k:a}:rpm", "x", "y")
	c.Set(ctx, "p:rl:{k:b}:rpm", "garbage", 0)
	for _, key := range []string{"a", "b"} {
		if res := allow(t, l, Request{Key: key, Limits: Limits{KeyRPM: 10}}); !res.Allowed || res.RemainingRequests != 9 {
			t.Errorf("key %s: %+v", key, res)
		}
	}
	if v, err := c.Get(ctx, "p:rl:{k:b}:rpm").Result(); err != nil || !strings.HasSuffix(v, " 6000000") {
		t.Errorf("bucket value %q, %v", v, err)
	}
}

// TestClusterNodeOutage: a dead cluster node sends only the teams whose slots
// it holds to the fallback; the others keep deciding in Redis. One warning,
// one info when it is back.
func TestClusterNodeOutage(t *testing.T) {
	nodes := redistest.StartCluster(t, "--cluster-require-full-coverage", "no")
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	cfg := config.Redis{Addrs: addrs, KeyPrefix: "test:", OnOutage: "open"}
	logger, logs := observed()
	l := NewRedis(NewClient(cfg), cfg, logger)
	defer l.Close()
	cc := l.client.(*redis.ClusterClient)
	ctx := context.Background()

	// One team on the node that will die, one elsewhere.
	var dead, alive Request
	for i := 0; dead.Team == "" || alive.Team == ""; i++ {
		r := Request{Team: fmt.Sprint("team", i), Key: "k", Limits: Limits{TeamRPM: 100000}}
		m, err := cc.MasterForKey(ctx, l.keyNames(&r).key[teamRPM])
		if err != nil {
			t.Fatal(err)
		}
		if m.Options().Addr == nodes[0].Addr {
			dead = r
		} else {
			alive = r
		}
	}
	for _, r := range []Request{dead, alive} {
		if res := allow(t, l, r); res.Degraded {
			t.Fatalf("before: %+v", res)
		}
	}
	nodes[0].Kill()
	// Decisions until the dead node was tried three times: the failure,
	// then two probes 200 ms apart.
	poll.Until(t, 10*time.Second, "three tries of the dead node", func() bool {
		if res := allow(t, l, dead); !res.Degraded {
			t.Fatalf("team on the dead node: %+v", res)
		}
		if res := allow(t, l, alive); res.Degraded {
			t.Fatalf("team on a live node: %+v", res)
		}
		return l.Stats().RedisErrors >= 3
	})
	if w := countLogs(logs, zapcore.WarnLevel); w != 1 {
		t.Errorf("%d warnings, want 1", w)
	}
	nodes[0].Restart()
	waitForRedis(t, l, dead)
	if i := countLogs(logs, zapcore.InfoLevel); i != 1 {
		t.Errorf("%d infos, want 1", i)
	}
}

// TestClusterSlotMigration: when a team's slot moves to another node (a
// resharding), the limiter follows the MOVED redirection itself (the client
// does not, so that it never replays a charging script after a network error)
// and the team's buckets keep counting where they were.
func TestClusterSlotMigration(t *testing.T) {
	addrs := startCluster(t)
	l := newTestRedis(t, testConfig(addrs...))
	ctx := context.Background()
	r := Request{Team: "migrating", Key: "k", Limits: Limits{KeyRPM: 100, TeamRPM: 10}}
	for range 4 {
		if !allow(t, l, r).Allowed {
			t.Fatal("refused before the migration")
		}
	}
	names := l.keyNames(&r)
	slot := int(keySlot(names.key[teamRPM]))
	owner, err := l.client.(*redis.ClusterClient).MasterForKey(ctx, names.key[teamRPM])
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*redis.Client{}
	ids := map[string]string{}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		defer c.Close()
		nodes[a] = c
		if ids[a], err = c.ClusterMyID(ctx).Result(); err != nil {
			t.Fatal(err)
		}
	}
	srcAddr := owner.Options().Addr
	dstAddr := addrs[0]
	if dstAddr == srcAddr {
		dstAddr = addrs[1]
	}
	src, dst := nodes[srcAddr], nodes[dstAddr]
	must := func(cmd *redis.Cmd) {
		t.Helper()
		if err := cmd.Err(); err != nil {
			t.Fatalf("%v: %v", cmd.Args(), err)
		}
	}
	must(dst.Do(ctx, "cluster", "setslot", slot, "importing", ids[srcAddr]))
	must(src.Do(ctx, "cluster", "setslot", slot, "migrating", ids[dstAddr]))
	keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys in slot %d: %v, %v", slot, keys, err)
	}
	host, port, _ := net.SplitHostPort(dstAddr)
	args := []any{"migrate", host, port, "", 0, 5000, "keys"}
	for _, k := range keys {
		args = append(args, k)
	}
	must(src.Do(ctx, args...))
	for _, c := range nodes {
		must(c.Do(ctx, "cluster", "setslot", slot, "node", ids[dstAddr]))
	}
	// The client still sends the slot to its old owner: MOVED.
	if n := drain(t, l, r, 20); n != 6 {
		t.Errorf("admitted %d after the migration, want the 6 the team had left", n)
	}
	if n, err := dst.Exists(ctx, keys...).Result(); err != nil || n != 2 {
		t.Errorf("buckets on the new owner: %d, %v", n, err)
	}
}

// TestBucketKeys: the buckets of one decision share a hash slot, different
// teams do not all share one, and no two (team, key) pairs share a key.
func TestBucketKeys(t *testing.T) {
	seen := map[string]string{}
	pairs := [][2]string{
		{"design", "design-ci"}, {"design", "other"}, {"", "design"}, {"design", ""},
		{"a}:k:b", "x"}, {"a", "b}"}, {"a:rpm", "x"}, {"a", "rpm"}, {"", "a:rpm"}, {"", "a"},
		{"{x}", "y"}, {"x", "y"}, {"%7Bx%7D", "y"}, {"ops", "k"}, {"ml", "k"},
	}
	slots := map[uint16]bool{}
	for _, p := range pairs {
		n := bucketKeys("nanogate:", p[0], p[1])
		var slot uint16
		for k, name := range n.key {
			if name == "" {
				continue
			}
			if !strings.HasPrefix(name, "nanogate:") {
				t.Errorf("%q does not start with the prefix", name)
			}
			owner := fmt.Sprint(p) // a key's buckets are its own, a team's its team's
			if kind(k) == teamRPM || kind(k) == teamTPM || kind(k) == batchTeamRPM || kind(k) == batchTeamTPM {
				owner = "team " + p[0]
			}
			if other, dup := seen[name]; dup && other != owner {
				t.Errorf("%s and %s share the key %q", owner, other, name)
			}
			seen[name] = owner
			if k == int(keyRPM) {
				slot = keySlot(name)
			} else if s := keySlot(name); s != slot {
				t.Errorf("%v: %q in slot %d, %q in %d", p, n.key[keyRPM], slot, name, s)
			}
		}
		slots[slot] = true
	}
	if len(slots) < 5 {
		t.Errorf("%d pairs in %d slots", len(pairs), len(slots))
	}
	if got := keySlot("foo"); got != 12182 { // Redis's own example
		t.Errorf("keySlot(foo) = %d, want 12182", got)
	}
}

func TestNewClient(t *testing.T) {
	if _, ok := NewClient(config.Redis{Addrs: []string{"127.0.0.1:1"}}).(*redis.Client); !ok {
		t.Error("one address: not a *redis.Client")
	}
	if _, ok := NewClient(config.Redis{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}).(*redis.ClusterClient); !ok {
		t.Error("several addresses: not a *redis.ClusterClient")
	}
	c := NewClient(config.Redis{Addrs: []string{"127.0.0.1:1"}, DialTimeout: time.Second}).(*redis.Client)
	o := c.Options()
	// Decisions run on the request's context: the client's own timeouts
	// bound them, at the decision timeout.
	dt := config.DefaultRedisDecisionTimeout
	if o.MaxRetries != 0 || o.DialTimeout != time.Second || o.ReadTimeout != dt || o.WriteTimeout != dt ||
		o.PoolTimeout != dt || !o.ContextTimeoutEnabled {
		t.Errorf("options: retries %d dial %v read %v write %v pool %v ctx %v", o.MaxRetries, o.DialTimeout,
			o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled)
	}
	short := NewClient(config.Redis{Addrs: []string{"127.0.0.1:1"}, ReadTimeout: 20 * time.Millisecond}).(*redis.Client)
	if o := short.Options(); o.ReadTimeout != 20*time.Millisecond || o.WriteTimeout != dt {
		t.Errorf("a read timeout below the decision timeout: read %v write %v", o.ReadTimeout, o.WriteTimeout)
	}
}

// silentServer is the address of a server that accepts connections and
// never answers: a Redis that hangs. The connections close with the test.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // hold it, say nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
