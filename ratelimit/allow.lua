-- One admission decision over the buckets of one request (ratelimit.Redis.Allow).
-- KEYS[i]: bucket i, all in one hash slot (the team's hash tag).
-- ARGV: 4 integers per bucket: limit (tokens/minute), unit (units/token),
-- rate (units/µs), cost (tokens). bucket.go explains the arithmetic; this is
-- the same, in doubles that stay below 2^53.
-- A bucket's value is "level ts unit" (units, µs, units per token); an absent
-- key is a full bucket, and a key expires when its bucket would be full.
-- Returns "allowed r1 s1 w1 r2 s2 w2 ...": allowed is 1 or 0, then per bucket
-- the whole tokens remaining, the µs until it is full, and the µs until it
-- has room for the cost (0: room now; -1: never, the cost exceeds the limit).

-- Redis < 5 replicates scripts verbatim unless told otherwise, and a script
-- that reads TIME must not be replayed verbatim.
if redis.replicate_commands then redis.replicate_commands() end

local tonumber, floor, ceil, max = tonumber, math.floor, math.ceil, math.max
local call, match, format = redis.call, string.match, string.format

local t = call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local vals = call('MGET', unpack(KEYS))
local n = #KEYS
local lvl, ts, cost, out = {}, {}, {}, {}
local allowed = 1
for i = 1, n do
  local a = i * 4 - 4
  local limit, u, r, c = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local capacity = limit * u
  local l, t0 = capacity, now
  local v = vals[i]
  if v then
    local sl, st, su = match(v, '^(%-?%d+) (%d+) (%d+)$')
    if sl then
      l, t0, su = tonumber(sl), tonumber(st), tonumber(su)
      if su ~= u then
        l = floor(l / su * u) -- the limit changed: same tokens, new units
      end
      if l < -capacity then l = -capacity end -- a debt owed under a larger limit
      if now > t0 then
        local fill = (now - t0) * r
        if fill >= capacity - l then l = capacity else l = l + fill end
      end
      if l > capacity then l = capacity end
    end
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
    local a = i * 4 - 4
    local u, r = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local capacity = tonumber(ARGV[a + 1]) * u
    local l = lvl[i] - cost[i]
    local rem, reset = 0, 0
    if l > 0 then rem = floor(l / u) end
    if l < capacity then reset = ceil((capacity - l) / r) end
    out[i * 3 - 2], out[i * 3 - 1] = rem, reset
    if reset > 0 then
      call('SET', KEYS[i], format('%d %d %d', l, ts[i], u), 'PX', ceil(reset / 1000))
    else
      call('DEL', KEYS[i])
    end
  end
end
-- %d, not tostring: Lua prints large numbers in %.14g.
return format('%d' .. string.rep(' %d', #out), allowed, unpack(out))
