"""The Lua scripts of the Redis store: one per operation, so each runs atomically on the server.

They mirror ``gateway.limits.bucket`` expression for expression (Lua numbers are IEEE doubles,
and levels are stored with ``%.17g``, which round-trips), so both stores give the same answers.

A bucket is a hash ``{level, cap, ts}`` that expires ``IDLE_MARGIN_S`` after it would be full
again (a missing bucket is a full one). A daily counter is a string holding an integer, in a
key that names its UTC day, expiring ``DAILY_TTL_S`` after its last charge.
"""

from __future__ import annotations

from gateway.limits.bucket import DAILY_TTL_S, IDLE_MARGIN_S

_COMMON = """
local function fmt(x) return string.format('%.17g', x) end

-- The bucket as of now under cap: adapted to a changed limit as of ts, then refilled at the new rate.
local function current(key, cap, now)
  local v = redis.call('HMGET', key, 'level', 'cap', 'ts')
  if not v[1] then return cap, now end
  local level, old, ts = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if old ~= cap then level = math.max(cap - (old - level), math.min(level, 0)) end
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  level = math.min(cap, level + elapsed * cap / 60)
  return level, math.max(ts, now)
end

local function store(key, level, cap, cap_text, ts)
  redis.call('HSET', key, 'level', fmt(level), 'cap', cap_text, 'ts', fmt(ts))
  redis.call('PEXPIRE', key, math.ceil(((cap - level) * 60 / cap + @MARGIN_S@) * 1000))
end
"""

ADMIT = (
    _COMMON
    + """
-- KEYS[i]: the bucket or daily counter of check i.
-- ARGV[1]: now. Per check i, from ARGV[2]: kind (rpm | tpm | daily_tokens), limit, and for
-- daily_tokens the seconds until 00:00 UTC (its wait when refused), else "".
-- Returns {} when admitted, having taken one request from every rpm bucket; otherwise
-- {i, wait, i, wait, ...} for every refusing check (waits as strings) and takes nothing.
local now = tonumber(ARGV[1])
local refused, levels, stamps = {}, {}, {}
for i = 1, #KEYS do
  local kind, limit = ARGV[3 * i - 1], tonumber(ARGV[3 * i])
  if kind == 'daily_tokens' then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used >= limit then
      refused[#refused + 1] = i
      refused[#refused + 1] = ARGV[3 * i + 1]
    end
  else
    local level, ts = current(KEYS[i], limit, now)
    levels[i], stamps[i] = level, ts
    local wait = nil
    if kind == 'rpm' then
      if level < 1 then wait = (1 - level) * 60 / limit end
    elseif level <= 0 then
      wait = -level * 60 / limit
    end
    if wait then
      refused[#refused + 1] = i
      refused[#refused + 1] = fmt(wait)
    end
  end
end
if #refused > 0 then return refused end
for i = 1, #KEYS do
  if ARGV[3 * i - 1] == 'rpm' then
    store(KEYS[i], levels[i] - 1, tonumber(ARGV[3 * i]), ARGV[3 * i], stamps[i])
  end
end
return {}
"""
).replace("@MARGIN_S@", repr(IDLE_MARGIN_S))

CHARGE = (
    (
        _COMMON
        + """
-- KEYS[i]: the tpm bucket or daily counter of check i.
-- ARGV[1]: now, ARGV[2]: tokens (an integer). Per check i, from ARGV[3]: kind (tpm | daily_tokens), limit.
local now, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS do
  local kind, limit_text = ARGV[2 * i + 1], ARGV[2 * i + 2]
  if kind == 'daily_tokens' then
    redis.call('INCRBY', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i], @DAILY_TTL_S@)
  else
    local limit = tonumber(limit_text)
    local level, ts = current(KEYS[i], limit, now)
    store(KEYS[i], level - tokens, limit, limit_text, ts)
  end
end
return 1
"""
    )
    .replace("@MARGIN_S@", repr(IDLE_MARGIN_S))
    .replace("@DAILY_TTL_S@", str(DAILY_TTL_S))
)
