package accounting

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/config"
)

// Redis is the Store of replicas sharing Redis (single node or Cluster).
//
// Every key of a team starts with the hash tag {prefix+team}, so one record
// and one reservation touch a single slot and each is one Lua script:
//
//	{nanogate:design}:acct:u:2026-11-25  hash: daily totals (expire DayRetention after the day)
//	{nanogate:design}:acct:u:2026-11     hash: monthly totals (kept)
//	{nanogate:design}:acct:u:total       hash: all-time totals (kept)
//	{nanogate:design}:acct:ids:2026-11-25 hash: ids applied that day (expire IDWindow after the day)
//	{nanogate:design}:acct:ids:2026-11-25:<shard> hash: the same, of 128 gateway or batch ids (idSlot)
//	{nanogate:design}:acct:resv          hash: reservation id -> micro-dollars, "<micros>|<key>" when made against a key's budget
//	{nanogate:design}:acct:resv:exp      zset: reservation id -> expiry (unix ms)
//	{nanogate:design}:acct:resv:sum      string: sum of the reservations
//	{nanogate:design}:acct:resv:keys     hash: key -> sum of its reservations against its own budget
//	nanogate:acct:teams                  set: teams with usage (for /admin/usage)
//
// A totals hash has one field per metric of each (key, model, provider)
// combination its records had: "c<len>:<key><len>:<model><len>:<provider>|<metric>"
// (length-prefixed, so any name is safe), metrics being req, fail, img, pt,
// ct, it, cost, list (see Totals); a failed request's provider is "". Team,
// key, model and provider totals are sums of these, made when reading: a
// record costs one HINCRBY per metric it has per period instead of 4 times
// as many, and the records of a batch with the same combination share
// theirs (they are summed before they are added). The field "t|cost"
// repeats the team's cost for the budget check, and "k<len>:<key>|cost"
// each key's cost for the check of its own budget; "v|kc" marks a hash
// whose key costs are kept (a hash written by an earlier version gets them
// from its combinations the first time a script touches it, in that
// script). Redis must persist its data (appendonly yes) for these to be
// books: a Redis that restarts empty has forgotten them.
type Redis struct {
	c      redis.UniversalClient
	prefix string
	o      Options
	keys   keyCache[[]string]
	heads  keyCache[[]any]
	// groupLoading is set while the group script is loaded after a
	// NOSCRIPT: one load at a time, reservations meanwhile made alone.
	groupLoading atomic.Bool
}

// NewRedis returns the Redis store over c, with keys under cfg.KeyPrefix
// (config.DefaultRedisKeyPrefix when cfg is nil or has none). The caller owns
// c: Close does not close it.
func NewRedis(c redis.UniversalClient, cfg *config.Redis, o Options) *Redis {
	prefix := config.DefaultRedisKeyPrefix
	if cfg != nil && cfg.KeyPrefix != "" {
		prefix = cfg.KeyPrefix
	}
	return &Redis{c: c, prefix: prefix, o: o.withDefaults()}
}

func (s *Redis) tag(team string) string { return "{" + s.prefix + team + "}:acct:" }

func (s *Redis) bucketKey(team, period string) string { return s.tag(team) + "u:" + period }

func (s *Redis) indexKey() string { return s.prefix + "acct:teams" }

func (s *Redis) resvKeys(team string) []string {
	return s.keys.get(keySet{team: team, kind: resvOnly}, func() []string {
		t := s.tag(team)
		return []string{t + "resv", t + "resv:exp", t + "resv:sum", t + "resv:keys"}
	})
}

// reserveKeys are the keys of a reservation: the bucket of the team
// budget's period, the reservation keys, then the bucket of the key
// budget's period (keyPeriod "": the first again).
func (s *Redis) reserveKeys(team, period, keyPeriod string) []string {
	return s.keys.get(keySet{team: team, period: period, keyPeriod: keyPeriod, kind: withBucket}, func() []string {
		kb := s.bucketKey(team, period)
		if keyPeriod != "" && keyPeriod != period {
			kb = s.bucketKey(team, keyPeriod)
		}
		return slices.Clip(append(append([]string{s.bucketKey(team, period)}, s.resvKeys(team)...), kb))
	})
}

// applyKeys are the keys a record of day touches: the day's ids, the day,
// month and total buckets, then the reservation keys.
func (s *Redis) applyKeys(team string, p [3]string) []string {
	return s.keys.get(keySet{team: team, period: p[0], kind: forApply}, func() []string {
		t := s.tag(team)
		return slices.Clip(append([]string{t + "ids:" + p[0], t + "u:" + p[0], t + "u:" + p[1], t + "u:" + p[2]},
			s.resvKeys(team)...))
	})
}

// keyCache keeps the key names of each team's buckets and reservations:
// building them takes several concatenations, and the reservation's are on
// every request's path. The slices are shared and never written.
type keyCache[V any] struct {
	mu sync.RWMutex
	m  map[keySet]V
}

// keySet names one list of keys: a team's, for a period (and a key
// budget's), of a kind.
type keySet struct {
	team, period, keyPeriod string
	kind                    uint8
}

// Kinds of key lists.
const (
	resvOnly uint8 = iota
	withBucket
	forApply
)

// maxCachedKeySets bounds the cache: when full it starts over, which drops
// the lists of past days and of teams gone from the config.
const maxCachedKeySets = 4096

func (c *keyCache[V]) get(k keySet, build func() V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = build()
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedKeySets {
		c.m = make(map[keySet]V)
	}
	c.m[k] = v
	c.mu.Unlock()
	return v
}

// luaResv holds the functions the scripts share over a team's
// reservations. KEYS of the reservations: rk resv, rk+1 resv:exp, rk+2
// resv:sum, rk+3 resv:keys.
//
// resvParts reads a reservation's value ("micros" or "micros|key") as its
// amount and its key. unreserveAll drops the reservations ids with one
// command of each kind, as dropping them one by one would; the sums it
// writes go out before they reach 2^52, where doubles stop being exact, and
// in %d (a Lua number prints 16 digits as 1e+15). unreserve drops one.
// purge drops those expired at now (at most 1000 a call: the rest go on the
// next one).
const luaResv = `
local function resvParts(v)
  if not v then
    return nil, nil
  end
  local bar = string.find(v, '|', 1, true)
  if bar then
    return tonumber(string.sub(v, 1, bar - 1)), string.sub(v, bar + 1)
  end
  return tonumber(v), nil
end
local function unreserveAll(rk, ids)
  local uniq, seen = {}, {}
  for i = 1, #ids do
    if not seen[ids[i]] then
      seen[ids[i]] = true
      uniq[#uniq + 1] = ids[i]
    end
  end
  if #uniq == 0 then
    return
  end
  local vals = redis.call('HMGET', KEYS[rk], unpack(uniq))
  local gone, total, perKey = {}, 0, {}
  local function keyDown(k, a)
    if redis.call('HINCRBY', KEYS[rk + 3], k, string.format('%d', -a)) <= 0 then
      redis.call('HDEL', KEYS[rk + 3], k)
    end
  end
  for i = 1, #uniq do
    if vals[i] then
      gone[#gone + 1] = uniq[i]
      local amt, k = resvParts(vals[i])
      if total + amt >= 4503599627370496 then
        redis.call('DECRBY', KEYS[rk + 2], string.format('%d', total))
        total = 0
      end
      total = total + amt
      if k and amt ~= 0 then
        local a = perKey[k] or 0
        if a + amt >= 4503599627370496 then
          keyDown(k, a)
          a = 0
        end
        perKey[k] = a + amt
      end
    end
  end
  if #gone == 0 then
    return
  end
  redis.call('HDEL', KEYS[rk], unpack(gone))
  redis.call('ZREM', KEYS[rk + 1], unpack(gone))
  if total ~= 0 then
    redis.call('DECRBY', KEYS[rk + 2], string.format('%d', total))
  end
  for k, a in pairs(perKey) do
    keyDown(k, a)
  end
end
local function unreserve(rk, id)
  unreserveAll(rk, {id})
end
local function purge(rk, now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[rk + 1], '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    unreserveAll(rk, expired)
    redis.call('ZREM', KEYS[rk + 1], unpack(expired))
  end
end
`

// luaKeyed gives a totals hash written by an earlier version the per-key
// cost fields it lacks, summed from its combinations, and marks it. It
// reports whether the hash did not exist (a script that writes one marks
// it itself).
const luaKeyed = `
local function keyed(h)
  if redis.call('HEXISTS', h, 'v|kc') == 1 then
    return false
  end
  local all = redis.call('HGETALL', h)
  if #all == 0 then
    return true
  end
  local sums = {}
  for i = 1, #all, 2 do
    local f = all[i]
    if string.byte(f, 1) == 99 and string.sub(f, -5) == '|cost' then
      local colon = string.find(f, ':', 2, true)
      local n = colon and tonumber(string.sub(f, 2, colon - 1))
      if n then
        local k = string.sub(f, colon + 1, colon + n)
        sums[k] = (sums[k] or 0) + tonumber(all[i + 1])
      end
    end
  end
  for k, v in pairs(sums) do
    redis.call('HSET', h, 'k' .. #k .. ':' .. k .. '|cost', string.format('%d', v))
  end
  redis.call('HSET', h, 'v|kc', '1')
  return false
end
`

// applyScript adds records of one team and one day to their day, month and
// total buckets, and releases the reservations with the records' ids, all
// in one step. Each record counts once: only those whose id is new in the
// day's id hash (HSETNX) are added. Their values are summed per field
// first, so that a batch costs one HINCRBY per field and bucket rather than
// one per record. Sums stay exact: a value of more than 15 digits is added
// on its own, and a sum is sent as soon as it reaches 2^52.
//
// KEYS: ids, day, month, total, resv, resv:exp, resv:sum, resv:keys, then
// the id shards of the records (idSlot).
// ARGV: ids expiry (unix s), day expiry (unix s), then per record: its id,
// the index of its id's shard after the first 8 keys (0: the ids hash), its
// field there, its combination's field prefix, the field prefix of its
// model at its image size ("" for none), its key's cost field, one value
// per metric. Returns the records added.
var applyScript = redis.NewScript(luaResv + luaKeyed + `
local names = {` + luaNames() + `}
local nm, costAt = #names, ` + strconv.Itoa(mCost+1) + `
local call, format = redis.call, string.format
local fresh = {}
for b = 2, 4 do
  fresh[b] = keyed(KEYS[b])
end
local order, acc = {}, {}
local function incr(f, v)
  for b = 2, 4 do
    call('HINCRBY', KEYS[b], f, v)
  end
end
local function add(f, v)
  if #v > 15 then
    incr(f, v)
    return
  end
  local a = acc[f]
  if not a then
    order[#order + 1] = f
    a = 0
  end
  a = a + tonumber(v)
  if a >= 4503599627370496 then
    incr(f, format('%d', a))
    a = 0
  end
  acc[f] = a
end
-- Ids an earlier version applied are in the ids hash whatever their form.
local legacy = call('EXISTS', KEYS[1]) == 1
local shardsTouched = {}
local function new(id, si, field)
  if si == '0' then
    return call('HSETNX', KEYS[1], id, '1') == 1
  end
  if legacy and call('HEXISTS', KEYS[1], id) == 1 then
    return false
  end
  local k = 8 + tonumber(si)
  if call('HSETNX', KEYS[k], field, '1') == 1 then
    shardsTouched[k] = true
    return true
  end
  return false
end
local applied, released = 0, {}
for i = 3, #ARGV, 6 + nm do
  local id = ARGV[i]
  if new(id, ARGV[i + 1], ARGV[i + 2]) then
    applied = applied + 1
    local cp, sp = ARGV[i + 3], ARGV[i + 4]
    for m = 1, nm do
      local v = ARGV[i + 5 + m]
      if v ~= '0' then
        add(cp .. names[m], v)
        if sp ~= '' then
          add(sp .. names[m], v)
        end
      end
    end
    local cost = ARGV[i + 5 + costAt]
    if cost ~= '0' then
      add('t|cost', cost)
      add(ARGV[i + 5], cost)
    end
  end
  released[#released + 1] = id
end
unreserveAll(5, released)
for k in pairs(shardsTouched) do
  call('EXPIREAT', KEYS[k], ARGV[1])
end
if applied > 0 then
  for _, f in ipairs(order) do
    if acc[f] ~= 0 then
      incr(f, format('%d', acc[f]))
    end
  end
  for b = 2, 4 do
    if fresh[b] then
      call('HSET', KEYS[b], 'v|kc', '1')
    end
  end
  call('EXPIREAT', KEYS[1], ARGV[1])
  call('EXPIREAT', KEYS[2], ARGV[2])
end
return applied
`)

func luaNames() string {
	q := make([]string, len(metricNames))
	for i, n := range metricNames {
		q[i] = "'" + n + "'"
	}
	return strings.Join(q, ", ")
}

// reserveScript checks the budgets and reserves, in one step.
//
// KEYS: the team budget period's bucket, resv, resv:exp, resv:sum,
// resv:keys, the key budget period's bucket.
// ARGV: now (unix ms), id, estimate, team budget ("" for none), expiry (unix
// ms), key ("" for no key budget), key budget, the key's cost field.
// Returns {admitted: 1, or 0 over the team's budget, -1 over the key's;
// the team's spend and other reservations; the key's, when it has a
// budget}.
var reserveScript = redis.NewScript(luaResv + luaKeyed + `
purge(2, ARGV[1])
local id, est = ARGV[2], tonumber(ARGV[3])
local prev = redis.call('HGET', KEYS[2], id)
local prevAmt, prevKey = resvParts(prev)
local spent, reserved, kspent, kreserved = 0, 0, 0, 0
local ok = 1
if ARGV[4] ~= '' then
  spent = tonumber(redis.call('HGET', KEYS[1], 't|cost') or '0')
  reserved = tonumber(redis.call('GET', KEYS[4]) or '0')
  if prev then reserved = reserved - prevAmt end
  if spent + reserved + est > tonumber(ARGV[4]) then ok = 0 end
end
local key = ARGV[6]
if key ~= '' then
  keyed(KEYS[6])
  kspent = tonumber(redis.call('HGET', KEYS[6], ARGV[8]) or '0')
  kreserved = tonumber(redis.call('HGET', KEYS[5], key) or '0')
  if prevKey == key then kreserved = kreserved - prevAmt end
  if ok == 1 and kspent + kreserved + est > tonumber(ARGV[7]) then ok = -1 end
end
local function reply(v)
  if key == '' then
    return {v, spent, reserved}
  end
  return {v, spent, reserved, kspent, kreserved}
end
if ok ~= 1 then
  return reply(ok)
end
if prev then unreserve(2, id) end
if key ~= '' then
  redis.call('HSET', KEYS[2], id, ARGV[3] .. '|' .. key)
  if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[5], key, ARGV[3]) end
else
  redis.call('HSET', KEYS[2], id, ARGV[3])
end
redis.call('ZADD', KEYS[3], ARGV[5], id)
redis.call('INCRBY', KEYS[4], ARGV[3])
return reply(1)
`)

// reservedScript purges expired reservations and returns the sum of the
// rest, or of those of a key. KEYS: unused, resv, resv:exp, resv:sum,
// resv:keys. ARGV: now (unix ms), key ("" for the team's).
var reservedScript = redis.NewScript(luaResv + `
purge(2, ARGV[1])
if ARGV[2] ~= '' then
  return tonumber(redis.call('HGET', KEYS[5], ARGV[2]) or '0')
end
return tonumber(redis.call('GET', KEYS[4]) or '0')
`)

// releaseScript drops one reservation. KEYS: resv, resv:exp, resv:sum,
// resv:keys. ARGV: id.
var releaseScript = redis.NewScript(luaResv + `
unreserve(1, ARGV[1])
return 0
`)

// applyGroup is the records of a batch that share a team and a day: one
// script call.
type applyGroup struct {
	team   string
	day    time.Time
	keys   []string
	args   []any
	n      int
	shards map[string]int // id shard -> its index after the fixed keys
}

// applyGroups splits recs by team and day, in the order they come.
func (s *Redis) applyGroups(recs []Record) []*applyGroup {
	type at struct {
		team string
		day  int64
	}
	var groups []*applyGroup
	byKey := make(map[at]*applyGroup, 4)
	for i := range recs {
		rec := &recs[i]
		day := rec.Time.UTC().Truncate(24 * time.Hour)
		k := at{rec.Team, day.Unix()}
		g := byKey[k]
		if g == nil {
			g = &applyGroup{team: rec.Team, day: day, keys: s.applyKeys(rec.Team, periods(rec.Time))}
			g.args = append(make([]any, 0, 2+(6+numMetrics)*(len(recs)-i)),
				day.Add(24*time.Hour+s.o.IDWindow).Unix(), day.Add(24*time.Hour+s.o.DayRetention).Unix())
			byKey[k] = g
			groups = append(groups, g)
		}
		g.n++
		sp := ""
		if rec.Size != "" && !rec.Failed() {
			sp = sizePrefix(rec.Model, rec.Size)
		}
		shard, field := idSlot(rec.ID)
		si := 0
		if shard != "" {
			if si = g.shards[shard]; si == 0 {
				if g.shards == nil {
					g.shards = make(map[string]int, 2)
				}
				si = len(g.shards) + 1
				g.shards[shard] = si
				// The cached list is clipped: this append copies it.
				g.keys = append(g.keys, g.keys[0]+":"+shard)
			}
		}
		g.args = append(g.args, rec.ID, si, field, comboPrefix(rec.Key, rec.Model, rec.Provider), sp, keyCostField(rec.Key))
		for _, v := range rec.deltas() {
			g.args = append(g.args, v)
		}
	}
	return groups
}

// sizePrefix is the field prefix of a model at an image size: the totals
// by size, apart from the (key, model, provider) combinations the team's
// totals are summed from.
func sizePrefix(model, size string) string {
	b := make([]byte, 0, 12+len(model)+len(size))
	b = append(b, 's')
	for _, s := range [2]string{model, size} {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	return string(append(b, '|'))
}

// idSlot is where the apply script remembers a record's id: a shard of the
// day's ids and the id's field in it, or (shard "") the day's ids hash with
// the id as its field.
//
// The gateway's request ids are a process prefix and a counter
// ("req_" + 12 hex digits + the counter in base 36), a batch line's its
// batch, line and attempt ("b" + batch + "-" + line + "-" + try): ids 128
// counters or lines apart (and of the same attempt) share a shard, with
// the counter's or line's remainder as field. A shard then holds at most
// 128 ids, which Redis keeps as a listpack (hash-max-listpack-entries is
// 128 by default): about 7 bytes an id for a team with the replica to
// itself, 50 for one of 32 evenly busy teams, against 80 in one hash per
// day. Only canonical spellings are sharded (no leading zero, no upper
// case), so that two ids never share a shard and field.
func idSlot(id string) (shard, field string) {
	if rest, ok := strings.CutPrefix(id, "req_"); ok && len(rest) > 12 && isLowerHex(rest[:12]) {
		if n, ok := canonicalUint(rest[12:], 36); ok {
			return "r" + rest[:12] + ":" + strconv.FormatUint(n/128, 36), strconv.FormatUint(n%128, 10)
		}
		return "", id
	}
	if rest, ok := strings.CutPrefix(id, "b"); ok {
		t := strings.LastIndexByte(rest, '-')
		if t <= 0 {
			return "", id
		}
		l := strings.LastIndexByte(rest[:t], '-')
		line, lok := canonicalUint(rest[l+1:t], 10)
		try, tok := canonicalUint(rest[t+1:], 10)
		if l <= 0 || !lok || !tok {
			return "", id
		}
		return "b" + rest[:l] + ":" + strconv.FormatUint(line/128, 36) + ":" + strconv.FormatUint(try, 10),
			strconv.FormatUint(line%128, 10)
	}
	return "", id
}

// canonicalUint parses s, a number in base as FormatUint writes it.
func canonicalUint(s string, base int) (uint64, bool) {
	n, err := strconv.ParseUint(s, base, 64)
	return n, err == nil && strconv.FormatUint(n, base) == s
}

func isLowerHex(s string) bool {
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// keyCostField is the field of a key's cost in a totals hash, for the check
// of its own budget.
func keyCostField(key string) string {
	return "k" + strconv.Itoa(len(key)) + ":" + key + "|cost"
}

// parseSizeField splits a size field; ok is false for any other.
func parseSizeField(f string) (model, size, metric string, ok bool) {
	if len(f) == 0 || f[0] != 's' {
		return "", "", "", false
	}
	rest := f[1:]
	var names [2]string
	for i := range names {
		colon := strings.IndexByte(rest, ':')
		if colon < 1 {
			return "", "", "", false
		}
		n, err := strconv.Atoi(rest[:colon])
		rest = rest[colon+1:]
		if err != nil || n < 0 || n > len(rest) {
			return "", "", "", false
		}
		names[i], rest = rest[:n], rest[n:]
	}
	if len(rest) < 2 || rest[0] != '|' {
		return "", "", "", false
	}
	return names[0], names[1], rest[1:], true
}

// comboPrefix is the field prefix of a (key, model, provider) combination.
func comboPrefix(key, model, provider string) string {
	b := make([]byte, 0, 16+len(key)+len(model)+len(provider))
	b = append(b, 'c')
	for _, s := range [3]string{key, model, provider} {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	return string(append(b, '|'))
}

// parseCombo splits a combination's field; ok is false for any other.
func parseCombo(f string) (names [3]string, metric string, ok bool) {
	if len(f) == 0 || f[0] != 'c' {
		return names, "", false
	}
	rest := f[1:]
	for i := range names {
		colon := strings.IndexByte(rest, ':')
		if colon < 1 {
			return names, "", false
		}
		n, err := strconv.Atoi(rest[:colon])
		rest = rest[colon+1:]
		if err != nil || n < 0 || n > len(rest) {
			return names, "", false
		}
		names[i], rest = rest[:n], rest[n:]
	}
	if len(rest) < 2 || rest[0] != '|' {
		return names, "", false
	}
	return names, rest[1:], true
}

// Apply implements Store.
func (s *Redis) Apply(ctx context.Context, rec Record) (bool, error) {
	n, err := s.ApplyBatch(ctx, []Record{rec})
	return n == 1, err
}

// ApplyBatch implements Store: one pipeline holding one script call per
// team and day of the records, after an SADD of their teams to the team
// index (so a team with usage is always listed; a listed team without
// usage is harmless).
func (s *Redis) ApplyBatch(ctx context.Context, recs []Record) (int, error) {
	for i := range recs {
		if err := recs[i].Validate(); err != nil {
			return 0, err
		}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	groups := s.applyGroups(recs)
	n, err := s.applyPipelined(ctx, recs, groups)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A restarted or flushed Redis forgot the script: load it and run
		// the batch again (the records that did run count once anyway).
		if lerr := applyScript.Load(ctx, s.c).Err(); lerr != nil {
			return 0, fmt.Errorf("accounting: load script: %w", lerr)
		}
		var again int
		again, err = s.applyPipelined(ctx, recs, groups)
		n += again
	}
	return n, err
}

func (s *Redis) applyPipelined(ctx context.Context, recs []Record, groups []*applyGroup) (int, error) {
	teams := make([]any, 0, 1)
	for i := range recs {
		if !slices.Contains(teams, any(recs[i].Team)) {
			teams = append(teams, recs[i].Team)
		}
	}
	cmds := make([]*redis.Cmd, len(groups))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.indexKey(), teams...)
		for i, g := range groups {
			cmds[i] = applyScript.EvalSha(ctx, p, g.keys, g.args...)
		}
		return nil
	})
	applied, failed := 0, -1
	for i, c := range cmds {
		n, cerr := c.Int()
		if cerr == nil {
			applied += n
		} else if failed < 0 {
			failed = i
		}
	}
	if failed >= 0 {
		// The first failed script's error is the batch's: a NOSCRIPT one
		// must reach ApplyBatch as is.
		g := groups[failed]
		return applied, fmt.Errorf("accounting: apply %d records of team %q on %s: %w",
			g.n, g.team, g.day.Format(time.DateOnly), cmds[failed].Err())
	}
	if err != nil {
		return applied, fmt.Errorf("accounting: apply batch: %w", err)
	}
	return applied, nil
}

// Reserve implements Store.
func (s *Redis) Reserve(ctx context.Context, a Ask) (Reservation, error) {
	now := s.o.Now()
	r := newReservation(&a, now)
	if !r.budgeted() {
		return r, nil
	}
	v := s.reserveValues(now, &r)
	return reserveResult(r, reserveScript.Run(ctx, s.c, s.reserveKeys(a.Team, r.bucketPeriod(), r.KeyPeriod), v[:]...))
}

// bucketPeriod is the period of the first bucket of the reservation's keys:
// the team budget's, else the key's.
func (r *Reservation) bucketPeriod() string {
	if r.Period != "" {
		return r.Period
	}
	return r.KeyPeriod
}

// reserveValues are the reservation script's arguments.
func (s *Redis) reserveValues(now time.Time, r *Reservation) [8]any {
	v := [8]any{now.UnixMilli(), r.ID, r.Micros, "", now.Add(s.o.ReservationTTL).UnixMilli(), "", "", ""}
	if r.Period != "" {
		v[3] = r.BudgetMicros
	}
	if r.Key != "" {
		v[5], v[6], v[7] = r.Key, r.KeyBudgetMicros, keyCostField(r.Key)
	}
	return v
}

// reserveHead is the start of a pipelined reservation of team in its
// periods, boxed once: EVALSHA, the script's hash, the number of keys, the
// keys.
func (s *Redis) reserveHead(team, period, keyPeriod string) []any {
	return s.heads.get(keySet{team: team, period: period, keyPeriod: keyPeriod, kind: withBucket}, func() []any {
		keys := s.reserveKeys(team, period, keyPeriod)
		h := make([]any, 0, 3+len(keys))
		h = append(h, "evalsha", reserveScript.Hash(), strconv.Itoa(len(keys)))
		for _, k := range keys {
			h = append(h, k)
		}
		return h
	})
}

// argsPool holds the argument slices of pipelined reservations, reused once
// their reply is read (go-redis keeps no reference to them).
var argsPool = sync.Pool{New: func() any { s := make([]any, 0, 16); return &s }}

// reserveResult reads the reservation script's reply into r.
func reserveResult(r Reservation, cmd *redis.Cmd) (Reservation, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return r, fmt.Errorf("accounting: reserve for team %q: %w", r.Team, err)
	}
	return decideReservation(r, res)
}

// decideReservation reads a reservation script's values into r: admitted,
// the team's spend and reservations, and the key's when it has a budget.
func decideReservation(r Reservation, res []int64) (Reservation, error) {
	want := 3 // admitted, the team's spend and reservations
	if r.Key != "" {
		want = 5 // and the key's
	}
	if len(res) != want {
		return r, fmt.Errorf("accounting: reserve for team %q: unexpected reply %v", r.Team, res)
	}
	if r.Period != "" {
		r.SpentMicros, r.ReservedMicros = res[1], res[2]
	}
	if r.Key != "" {
		r.KeySpentMicros, r.KeyReservedMicros = res[3], res[4]
	}
	switch res[0] {
	case 1:
		return r, nil
	case -1:
		return r, ErrKeyBudgetExceeded
	}
	return r, ErrBudgetExceeded
}

// ReserveCall is a reservation that travels in a Redis pipeline with other
// commands (QueueReserve), so that admitting a request costs one round trip
// whatever else it asks Redis. It is read once, by Result, after the
// pipeline ran.
type ReserveCall struct {
	st   Store    // answers alone when nothing was queued
	g    *Guarded // the guard the answer goes through, if any
	s    *Redis   // the store the script was queued for
	a    Ask
	r    Reservation
	cmd  *redis.Cmd
	args *[]any // the command's, from argsPool
	// grouped: cmd is a group script's (QueueReserves), whose reply
	// holds this reservation's values at place at.
	grouped bool
	at      int
}

// QueueReserve prepares in c the reservation st.Reserve would make and,
// when st is Redis (or Guarded over Redis, and not leaving it alone), adds
// its script to p. p must be a pipeline of a client of the same Redis: the
// limiter's, say, as this script is safe on a client that never retries and
// its timeouts then bound the wait. Otherwise c's Result reserves alone.
func QueueReserve(ctx context.Context, p redis.Pipeliner, st Store, a Ask, c *ReserveCall) {
	*c = ReserveCall{st: st, a: a}
	s, g := redisOf(st)
	c.g = g
	if s == nil {
		return
	}
	now := s.o.Now()
	c.s, c.r = s, newReservation(&c.a, now)
	if !c.r.budgeted() {
		c.s = nil
		return
	}
	v := s.reserveValues(now, &c.r)
	c.args = argsPool.Get().(*[]any)
	*c.args = append(append((*c.args)[:0], s.reserveHead(a.Team, c.r.bucketPeriod(), c.r.KeyPeriod)...), v[:]...)
	c.cmd = p.Do(ctx, *c.args...)
}

// Result is the reservation, once the pipeline ran; ctx is the caller's.
// Its semantics are those of the store's Reserve (Guarded's outage handling
// included).
func (c *ReserveCall) Result(ctx context.Context) (Reservation, error) {
	cmd := c.cmd
	c.cmd = nil
	if cmd == nil {
		return c.st.Reserve(ctx, c.a)
	}
	var r Reservation
	var err error
	if c.grouped {
		r, err = groupResult(c.r, cmd, c.at)
	} else {
		r, err = reserveResult(c.r, cmd)
		clear(*c.args)
		argsPool.Put(c.args)
		c.args = nil
	}
	if err := cmd.Err(); err != nil && notRun(err) {
		// The script did not run: alone, on the store's own client, it is
		// loaded or follows the cluster's new layout. The group script
		// is loaded for the next groups.
		if c.grouped && redis.HasErrorPrefix(err, "NOSCRIPT") {
			c.s.loadGroupScript()
		}
		return c.st.Reserve(ctx, c.a)
	}
	if c.g != nil {
		return c.g.answered(ctx, r, err, &c.a)
	}
	return r, err
}

// notRun reports whether err says a script did not run: Redis did not have
// it, or the cluster sent it elsewhere.
func notRun(err error) bool {
	for _, p := range []string{"NOSCRIPT", "MOVED", "ASK", "TRYAGAIN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// Client is the store's Redis client.
func (s *Redis) Client() redis.UniversalClient { return s.c }

// RedisOf returns the Redis store st is or guards, nil when it has none.
func RedisOf(st Store) *Redis {
	if g, ok := st.(*Guarded); ok {
		st = g.Store
	}
	s, _ := st.(*Redis)
	return s
}

// Release implements Store.
func (s *Redis) Release(ctx context.Context, r Reservation) error {
	if err := releaseScript.Run(ctx, s.c, s.resvKeys(r.Team), r.ID).Err(); err != nil {
		return fmt.Errorf("accounting: release %s: %w", r.ID, err)
	}
	return nil
}

// Reserved implements Store.
func (s *Redis) Reserved(ctx context.Context, team, key string) (int64, error) {
	keys := s.reserveKeys(team, PeriodTotal, "")
	n, err := reservedScript.Run(ctx, s.c, keys, s.o.Now().UnixMilli(), key).Int64()
	if err != nil {
		return 0, fmt.Errorf("accounting: reserved of team %q: %w", team, err)
	}
	return n, nil
}

// Read implements Store: one pipeline of HGETALL.
func (s *Redis) Read(ctx context.Context, team string, periods []string) ([]*Bucket, error) {
	cmds := make([]*redis.MapStringStringCmd, len(periods))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, per := range periods {
			cmds[i] = p.HGetAll(ctx, s.bucketKey(team, per))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("accounting: read team %q: %w", team, err)
	}
	out := make([]*Bucket, len(periods))
	for i, c := range cmds {
		b, err := parseBucket(periods[i], c.Val())
		if err != nil {
			return nil, fmt.Errorf("accounting: read team %q: %w", team, err)
		}
		out[i] = b
	}
	return out, nil
}

// parseBucket sums a totals hash's combinations into the team, key, model
// and provider totals.
func parseBucket(period string, fields map[string]string) (*Bucket, error) {
	b := newBucket(period)
	for f, v := range fields {
		if model, size, metric, ok := parseSizeField(f); ok {
			m := slices.Index(metricNames[:], metric)
			n, err := strconv.ParseInt(v, 10, 64)
			if m < 0 || err != nil {
				continue
			}
			k := SizeKey(model, size)
			t := b.Sizes[k]
			if t == nil {
				t = &Totals{}
				b.Sizes[k] = t
			}
			*t.ptr(m) += n
			continue
		}
		names, metric, ok := parseCombo(f)
		if !ok {
			continue // "t|cost", kept for the budget check
		}
		m := slices.Index(metricNames[:], metric)
		if m < 0 {
			continue // a metric of a newer version: not ours to show
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("field %q of %s: %w", f, period, err)
		}
		*b.Team.ptr(m) += n
		for i, kind := range [3]byte{'k', 'm', 'p'} {
			if kind == 'p' && names[i] == "" {
				continue // failed requests have no provider
			}
			dm := b.dim(kind)
			t := dm[names[i]]
			if t == nil {
				t = &Totals{}
				dm[names[i]] = t
			}
			*t.ptr(m) += n
		}
	}
	return b, nil
}

// Teams implements Store.
func (s *Redis) Teams(ctx context.Context) ([]string, error) {
	teams, err := s.c.SMembers(ctx, s.indexKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("accounting: list teams: %w", err)
	}
	slices.Sort(teams)
	return teams, nil
}

// Ping reports whether Redis answers.
func (s *Redis) Ping(ctx context.Context) error { return s.c.Ping(ctx).Err() }

// Close implements Store; the client stays open (its owner closes it).
func (s *Redis) Close() error { return nil }
