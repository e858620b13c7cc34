-- The admission decisions of a group of requests, in order, as if each ran
-- alone one after the other (ratelimit.Redis.Allow, and the admissions a
-- busy replica sends together): the group shares one clock reading, one
-- MGET and one write per bucket.
-- KEYS: the distinct buckets of the group, all in one hash slot.
-- ARGV[1]: the number of requests; then per request the number of its
-- buckets, then 5 integers per bucket: the bucket's index in KEYS, limit
-- (tokens/minute), unit (units/token), rate (units/µs), cost (tokens).
-- bucket.go explains the arithmetic; this is the same, in doubles that stay
-- below 2^53.
-- A bucket's value is "level ts unit" (units, µs, units per token); an absent
-- key is a full bucket, and a key expires when its bucket would be full.
-- Returns per request "allowed r1 s1 w1 r2 s2 w2 ...": allowed is 1 or 0,
-- then per bucket the whole tokens remaining, the µs until it is full, and
-- the µs until it has room for the cost (0: room now; -1: never, the cost
-- exceeds the limit).

-- Redis < 5 replicates scripts verbatim unless told otherwise, and a script
-- that reads TIME must not be replayed verbatim.
if redis.replicate_commands then redis.replicate_commands() end

local tonumber, floor, ceil, max = tonumber, math.floor, math.ceil, math.max
local call, match, format, rep = redis.call, string.match, string.format, string.rep

local t = call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local vals = call('MGET', unpack(KEYS))

-- A bucket's stored state, as the key would hold it between two requests:
-- false when absent (or not ours), else level, ts, unit.
local sl, st, su = {}, {}, {}
for k = 1, #KEYS do
  local v = vals[k]
  local a, b, c
  if v then a, b, c = match(v, '^(%-?%d+) (%d+) (%d+)$') end
  if a then
    sl[k], st[k], su[k] = tonumber(a), tonumber(b), tonumber(c)
  else
    sl[k] = false
  end
end

-- What the last admitted request touching a bucket leaves to write:
-- capacity and rate, to compute its expiry.
local wcap, wrate, seen, touched = {}, {}, {}, {}
local replies = {}
local pos = 2
local idx, lim, unit, rate, cost, lvl, ts = {}, {}, {}, {}, {}, {}, {}
for q = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local out = {}
  local allowed = 1
  for i = 1, n do
    local k, limit, u, r, c = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2]),
      tonumber(ARGV[pos + 3]), tonumber(ARGV[pos + 4])
    pos = pos + 5
    idx[i], lim[i], unit[i], rate[i] = k, limit, u, r
    local capacity = limit * u
    local l, t0 = capacity, now
    if sl[k] then
      l, t0 = sl[k], st[k]
      if su[k] ~= u then
        l = floor(l / su[k] * u) -- the limit changed: same tokens, new units
      end
      if l < -capacity then l = -capacity end -- a debt owed under a larger limit
      if now > t0 then
        local fill = (now - t0) * r
        if fill >= capacity - l then l = capacity else l = l + fill end
      end
      if l > capacity then l = capacity end
    end
    lvl[i], ts[i] = l, max(now, t0)
    local retry = 0
    if c > limit then
      retry, allowed = -1, 0
    else
      c = c * u
      cost[i] = c
      if l < c then
        retry, allowed = ceil((c - l) / r), 0
      end
    end
    local rem, reset = 0, 0
    if l > 0 then rem = floor(l / u) end
    if l < capacity then reset = ceil((capacity - l) / r) end
    out[i * 3 - 2], out[i * 3 - 1], out[i * 3] = rem, reset, retry
  end
  if allowed == 1 then
    for i = 1, n do
      local k, u, r = idx[i], unit[i], rate[i]
      local capacity = lim[i] * u
      local l = lvl[i] - cost[i]
      local rem, reset = 0, 0
      if l > 0 then rem = floor(l / u) end
      if l < capacity then reset = ceil((capacity - l) / r) end
      out[i * 3 - 2], out[i * 3 - 1] = rem, reset
      if reset > 0 then
        sl[k], st[k], su[k] = l, ts[i], u
      else
        sl[k] = false -- full: the key goes, as an absent key is a full bucket
      end
      wcap[k], wrate[k] = capacity, r
      if not seen[k] then seen[k] = true; touched[#touched + 1] = k end
    end
  end
  -- %d, not tostring: Lua prints large numbers in %.14g.
  replies[q] = format('%d' .. rep(' %d', #out), allowed, unpack(out))
end

for j = 1, #touched do
  local k = touched[j]
  if sl[k] then
    local reset = ceil((wcap[k] - sl[k]) / wrate[k])
    call('SET', KEYS[k], format('%d %d %d', sl[k], st[k], su[k]), 'PX', ceil(reset / 1000))
  else
    call('DEL', KEYS[k])
  end
end
return replies
