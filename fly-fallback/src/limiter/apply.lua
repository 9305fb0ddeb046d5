-- Applies one limiter operation atomically: gateway_core::limits::MemoryCounters::apply's
-- semantics (see core/src/limits/store.rs), on counters that are Redis strings with an expiry.
--
-- KEYS: every counter the operation names, once each.
-- ARGV: C, then per check: N, N indices into KEYS (the first receives `add`), limit, add, ttl_ms;
--       then A, then per adjustment: index, delta, ttl_ms, only_existing (0 or 1).
-- Reply: {granted (1 or 0), one total per check}.
--
-- Numbers are integers within +-(2^53 - 1); Lua's doubles hold them exactly. A check's sum of up
-- to 32 counters is taken in two exact halves (multiples of 2^32, and remainders), so that it is
-- the exact sum, clamped, as in the reference.
local MAX = 9007199254740991
local TWO32 = 4294967296
local HI = 2097152 -- 2^53 / 2^32

local function clamp(v)
  if v > MAX then return MAX end
  if v < -MAX then return -MAX end
  return v
end

local function int(v)
  return string.format('%.0f', v)
end

-- The live counters: a number, or false when absent (expired keys are absent).
local values = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    values[i] = tonumber(v) or 0
  else
    values[i] = false
  end
end

local function exact_sum(indices)
  local hi, lo = 0, 0
  for _, i in ipairs(indices) do
    local v = values[i] or 0
    local r = v % TWO32
    hi = hi + (v - r) / TWO32
    lo = lo + r
  end
  local carry = math.floor(lo / TWO32)
  hi = hi + carry
  lo = lo - carry * TWO32
  if hi >= HI then return MAX end
  if hi < -HI or (hi == -HI and lo == 0) then return -MAX end
  return hi * TWO32 + lo
end

-- Memory's `add`: changes a live counter, or creates it with its expiry.
local function add(i, delta, ttl, only_existing)
  local old = values[i]
  if old then
    local new = clamp(old + delta)
    if new == old + delta then
      if delta ~= 0 then
        redis.call('INCRBY', KEYS[i], int(delta))
      end
    else
      redis.call('SET', KEYS[i], int(new), 'KEEPTTL')
    end
    values[i] = new
  elseif not only_existing and delta ~= 0 then
    local v = clamp(delta)
    redis.call('SET', KEYS[i], int(v), 'PX', int(ttl))
    values[i] = v
  end
end

local p = 1
local function next_number()
  local v = tonumber(ARGV[p])
  p = p + 1
  return v
end

local checks = {}
local count = next_number()
for c = 1, count do
  local n = next_number()
  local indices = {}
  for j = 1, n do
    indices[j] = next_number()
  end
  checks[c] = { indices = indices, limit = next_number(), add = next_number(), ttl = next_number() }
end
local adjust = {}
count = next_number()
for a = 1, count do
  adjust[a] = { index = next_number(), delta = next_number(), ttl = next_number(),
                only_existing = next_number() == 1 }
end

local totals = {}
local fits = true
for c, check in ipairs(checks) do
  totals[c] = exact_sum(check.indices)
  if check.add ~= 0 and totals[c] + check.add > check.limit then
    fits = false
  end
end
if not fits then
  local reply = { 0 }
  for c = 1, #checks do reply[c + 1] = totals[c] end
  return reply
end

local reply = { 1 }
for c, check in ipairs(checks) do
  if check.add ~= 0 then
    add(check.indices[1], check.add, check.ttl, false)
  end
  reply[c + 1] = clamp(totals[c] + check.add)
end
for _, a in ipairs(adjust) do
  add(a.index, a.delta, a.ttl, a.only_existing)
end
return reply
