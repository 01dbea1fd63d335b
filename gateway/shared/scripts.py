"""The two Lua scripts of the budgets: each one atomic operation and one round trip.

ADMIT reads every period's spend and compares it with its limit at one instant, in Redis.
SPEND adds an answered request's cost to every period and its usage counters, and sets each
key's TTL in the same step, so no key is ever left without one (a connection lost between an
``INCRBY`` and its ``EXPIRE`` would leave a key for ever).

Money is integer nano-USD: ``INCRBY`` sums across replicas are exact, where ``INCRBYFLOAT``
drifts (30 x 0.01 is not 0.30). Amounts travel as the strings of ARGV: a Lua number would turn
large ones into ``1e+16``, which ``INCRBY`` refuses.
"""

from __future__ import annotations

# KEYS: the spend keys. ARGV: each key's limit in nano-USD, -1 for none.
# Returns {first spent period (1-based) or 0, spend of each key...}.
ADMIT = """
local out = {0}
for i, key in ipairs(KEYS) do
  local spent = tonumber(redis.call('GET', key) or '0') or 0
  local limit = tonumber(ARGV[i]) or -1
  out[i + 1] = spent
  if out[1] == 0 and limit >= 0 and spent >= limit then
    out[1] = i
  end
end
return out
"""

# KEYS: n spend keys, then optionally the usage hash.
# ARGV: n, amount (nano-USD), the TTL of each spend key, the usage TTL, then field/delta pairs.
# Returns the new spend of each key.
SPEND = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[2 + i])
end
local usage = KEYS[n + 1]
if usage then
  for j = n + 4, #ARGV, 2 do
    redis.call('HINCRBY', usage, ARGV[j], ARGV[j + 1])
  end
  redis.call('EXPIRE', usage, ARGV[n + 3])
end
return out
"""
