-- Corrects TPM buckets by a delta of tokens (ratelimit.Redis.Adjust).
-- KEYS[i]: bucket i, all in one hash slot. ARGV: 3 integers per bucket:
-- limit, unit, rate; then the delta in tokens (positive: a debt that may take
-- the level below zero; negative: a refund capped at capacity), bounded here
-- per bucket (as clampDelta does) so that delta*unit stays near 2^53.
-- The arithmetic and the values are allow.lua's. Returns the number of buckets.

if redis.replicate_commands then redis.replicate_commands() end

local tonumber, floor, ceil, max, min = tonumber, math.floor, math.ceil, math.max, math.min
local call, match, format = redis.call, string.match, string.format
local maxunits = 4503599627370496 -- 2^52

local t = call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local delta = tonumber(ARGV[n * 3 + 1])
local vals = call('MGET', unpack(KEYS))
for i = 1, n do
  local a = i * 3 - 3
  local limit, u, r = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local capacity = limit * u
  local l, t0 = capacity, now
  local v = vals[i]
  if v then
    local sl, st, su = match(v, '^(%-?%d+) (%d+) (%d+)$')
    if sl then
      l, t0, su = tonumber(sl), tonumber(st), tonumber(su)
      if su ~= u then
        l = floor(l / su * u)
      end
      if l < -capacity then l = -capacity end -- a debt owed under a larger limit
      if now > t0 then
        local fill = (now - t0) * r
        if fill >= capacity - l then l = capacity else l = l + fill end
      end
      if l > capacity then l = capacity end
    end
  end
  local bound = floor(2 * maxunits / u)
  local d = max(-bound, min(delta, bound))
  l = max(-capacity, min(l - d * u, capacity))
  if l < capacity then
    call('SET', KEYS[i], format('%d %d %d', l, max(now, t0), u), 'PX', ceil(ceil((capacity - l) / r) / 1000))
  else
    call('DEL', KEYS[i])
  end
end
return n
