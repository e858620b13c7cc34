package accounting

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// reserveGroupScript makes the reservations of several requests of one team,
// in order, exactly as reserveScript would one after the other: the
// admissions a busy replica sends together. Over reserveScript run once per
// request, the group shares one purge of expired reservations, one read of
// each budget's spend and of the reserved sums, and one write of each: per
// request there remain one read (a reservation already made under its id)
// and its place in one HSET and one ZADD.
//
// KEYS: resv, resv:exp, resv:sum, resv:keys, then the budget buckets the
// requests check.
// ARGV: now (unix ms), expiry (unix ms), then per request: id, estimate,
// team budget ("" for none), the index of its team budget's bucket in
// KEYS, key ("" for no key budget), key budget, the key's cost field, the
// index of its key budget's bucket.
// Returns per request reserveScript's five values: admitted (1, 0 over the
// team's budget, -1 over the key's), the team's spend and other
// reservations, the key's.
var reserveGroupScript = redis.NewScript(luaResv + luaKeyed + `
local call, format = redis.call, string.format
purge(1, ARGV[1])
local spentAt, keyedDone = {}, {}
local sum, kstored = nil, {}
local sumDelta, kdelta, pend, hs, zs = 0, {}, {}, {}, {}
local function spent(k, f)
  local c = spentAt[k .. '|' .. f]
  if not c then
    c = tonumber(call('HGET', KEYS[k], f) or '0')
    spentAt[k .. '|' .. f] = c
  end
  return c
end
-- flush writes what the requests so far reserved, and forgets what was read
-- of the reserved sums: before a reservation is dropped, and at the end.
local function flush()
  if #hs > 0 then
    call('HSET', KEYS[1], unpack(hs))
    call('ZADD', KEYS[2], unpack(zs))
  end
  if sumDelta ~= 0 then call('INCRBY', KEYS[3], format('%d', sumDelta)) end
  for k, d in pairs(kdelta) do
    if d ~= 0 then call('HINCRBY', KEYS[4], k, format('%d', d)) end
  end
  sum, kstored, sumDelta, kdelta, pend, hs, zs = nil, {}, 0, {}, {}, {}, {}
end
local out = {}
for p = 3, #ARGV, 8 do
  local id, est = ARGV[p], tonumber(ARGV[p + 1])
  if pend[id] or sumDelta + est >= 4503599627370496 then flush() end
  local prev = call('HGET', KEYS[1], id)
  local prevAmt, prevKey = resvParts(prev)
  local tb, key = ARGV[p + 2], ARGV[p + 4]
  local tspent, reserved, kspent, kreserved = 0, 0, 0, 0
  local ok = 1
  if tb ~= '' then
    tspent = spent(tonumber(ARGV[p + 3]), 't|cost')
    if not sum then sum = tonumber(call('GET', KEYS[3]) or '0') end
    reserved = sum + sumDelta
    if prev then reserved = reserved - prevAmt end
    if tspent + reserved + est > tonumber(tb) then ok = 0 end
  end
  if key ~= '' then
    local kb = tonumber(ARGV[p + 7])
    if not keyedDone[kb] then
      keyed(KEYS[kb])
      keyedDone[kb] = true
    end
    kspent = spent(kb, ARGV[p + 6])
    if not kstored[key] then kstored[key] = tonumber(call('HGET', KEYS[4], key) or '0') end
    kreserved = kstored[key] + (kdelta[key] or 0)
    if prevKey == key then kreserved = kreserved - prevAmt end
    if ok == 1 and kspent + kreserved + est > tonumber(ARGV[p + 5]) then ok = -1 end
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = ok, tspent, reserved, kspent, kreserved
  if ok == 1 then
    if prev then
      flush()
      unreserve(1, id)
    end
    local v = ARGV[p + 1]
    if key ~= '' then
      v = v .. '|' .. key
      kdelta[key] = (kdelta[key] or 0) + est
    end
    hs[#hs + 1], hs[#hs + 2] = id, v
    zs[#zs + 1], zs[#zs + 2] = ARGV[2], id
    pend[id] = true
    sumDelta = sumDelta + est
  end
end
flush()
return out
`)

// groupValues is how many values the group script returns per request.
const groupValues = 5

// QueueReserves is QueueReserve for the admissions one pipeline carries:
// calls[i] gets the reservation of asks[i]. The reservations of a team go
// in one script, which decides them in their order exactly as if each ran
// alone after the one before; a team with one reservation sends
// QueueReserve's script.
func QueueReserves(ctx context.Context, p redis.Pipeliner, st Store, asks []Ask, calls []*ReserveCall) {
	s, g := redisOf(st)
	if s == nil || len(asks) < 2 {
		for i := range asks {
			QueueReserve(ctx, p, st, asks[i], calls[i])
		}
		return
	}
	now := s.o.Now()
	// Teams in the order of their first request; a group of one team's
	// reservations, with its requests' places in calls.
	type teamGroup struct {
		team    string
		members []int
	}
	var groups []teamGroup
	for i := range asks {
		c := calls[i]
		*c = ReserveCall{st: st, g: g, a: asks[i]}
		c.r = newReservation(&c.a, now)
		if !c.r.budgeted() {
			continue // Result answers alone, at once
		}
		j := slices.IndexFunc(groups, func(tg teamGroup) bool { return tg.team == c.a.Team })
		if j < 0 {
			groups = append(groups, teamGroup{team: c.a.Team})
			j = len(groups) - 1
		}
		groups[j].members = append(groups[j].members, i)
	}
	for _, tg := range groups {
		if len(tg.members) == 1 {
			i := tg.members[0]
			QueueReserve(ctx, p, st, asks[i], calls[i])
			continue
		}
		args := s.groupArgs(now, tg.team, calls, tg.members)
		cmd := p.Do(ctx, args...)
		for k, i := range tg.members {
			c := calls[i]
			c.s, c.cmd, c.at, c.grouped = s, cmd, k, true
		}
	}
}

// redisOf is the Redis store behind st and the guard in front of it, if
// any; no store when st is not Redis or its guard leaves Redis alone.
func redisOf(st Store) (*Redis, *Guarded) {
	s, _ := st.(*Redis)
	g, ok := st.(*Guarded)
	if ok {
		if s, _ = g.Store.(*Redis); g.Down() {
			s = nil
		}
	}
	return s, g
}

// groupArgs is the EVALSHA command of the reservations of calls at members,
// all of team.
func (s *Redis) groupArgs(now time.Time, team string, calls []*ReserveCall, members []int) []any {
	rk := s.resvKeys(team)
	keys := make([]string, len(rk), len(rk)+2)
	copy(keys, rk)
	at := func(k string) int {
		if i := slices.Index(keys, k); i >= 0 {
			return i + 1
		}
		keys = append(keys, k)
		return len(keys)
	}
	argv := make([]any, 0, 2+8*len(members))
	argv = append(argv, now.UnixMilli(), now.Add(s.o.ReservationTTL).UnixMilli())
	for _, i := range members {
		r := &calls[i].r
		var tb, tbi, key, kb, kf, kbi any = "", 0, "", "", "", 0
		if r.Period != "" {
			tb, tbi = r.BudgetMicros, at(s.bucketKey(team, r.Period))
		}
		if r.Key != "" {
			key, kb, kf, kbi = r.Key, r.KeyBudgetMicros, keyCostField(r.Key), at(s.bucketKey(team, r.KeyPeriod))
		}
		argv = append(argv, r.ID, r.Micros, tb, tbi, key, kb, kf, kbi)
	}
	args := make([]any, 0, 3+len(keys)+len(argv))
	args = append(args, "evalsha", reserveGroupScript.Hash(), len(keys))
	for _, k := range keys {
		args = append(args, k)
	}
	return append(args, argv...)
}

// loadGroupScript loads the group script into Redis (every master of a
// cluster), in the background: a reservation that found it missing has
// already been made alone.
func (s *Redis) loadGroupScript() {
	if !s.groupLoading.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.groupLoading.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reserveGroupScript.Load(ctx, s.c)
	}()
}

// groupResult reads the reservation at place at of the group script's reply
// into r.
func groupResult(r Reservation, cmd *redis.Cmd, at int) (Reservation, error) {
	vals, err := cmd.Slice()
	if err != nil {
		return r, fmt.Errorf("accounting: reserve for team %q: %w", r.Team, err)
	}
	if at < 0 || len(vals) < (at+1)*groupValues {
		return r, fmt.Errorf("accounting: reserve for team %q: a reply of %d values for request %d", r.Team, len(vals), at)
	}
	var res [groupValues]int64
	for i := range res {
		v, ok := vals[at*groupValues+i].(int64)
		if !ok {
			return r, fmt.Errorf("accounting: reserve for team %q: unexpected reply %v", r.Team, vals[at*groupValues+i])
		}
		res[i] = v
	}
	n := 3
	if r.Key != "" {
		n = groupValues
	}
	return decideReservation(r, res[:n])
}
