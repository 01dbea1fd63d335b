"""The Lua script of the budgets' admission: one atomic operation and one round trip.

ADMIT reads every period's spend and compares it with its limit at one instant, in Redis, and
grants this replica a lease (``gateway.shared.lease``) in the same step.

The spend itself is written by the state's flush, in one ``MULTI`` transaction that sets each
key's TTL in the same step, so no key is ever left without one (a connection lost between an
``INCRBY`` and its ``EXPIRE`` would leave a key for ever).

Money is integer nano-USD: ``INCRBY`` sums across replicas are exact, where ``INCRBYFLOAT``
drifts (30 x 0.01 is not 0.30). Amounts travel as the strings of ARGV: a Lua number would turn
large ones into ``1e+16``, which ``INCRBY`` refuses.
"""

from __future__ import annotations

# KEYS: the n spend keys. ARGV: each key's limit in nano-USD (-1 for none), then each key's
# lease wanted (0 for none), the least grant worth having, the key's TTL in seconds, and what
# this replica spent on it that is not written yet (a flush on its way: counted as spent).
# A lease is all or nothing: granted (added to every limited key's spend, at most half of what
# is left there) only when no period is spent and every limited key can grant its least.
# Returns {first spent period (1-based) or 0, spend of each key..., grant of each key...}.
ADMIT = """
local n = #KEYS
local out, counted = {0}, {}
for i = 1, n do
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local limit = tonumber(ARGV[i]) or -1
  out[i + 1] = spent
  counted[i] = spent + math.max(tonumber(ARGV[4 * n + i]) or 0, 0)
  if out[1] == 0 and limit >= 0 and counted[i] >= limit then
    out[1] = i
  end
end
local grants, lease = {}, out[1] == 0
for i = 1, n do
  local limit = tonumber(ARGV[i]) or -1
  local want = tonumber(ARGV[n + i]) or 0
  grants[i] = 0
  if limit >= 0 then
    local grant = math.min(want, math.floor((limit - counted[i]) / 2))
    if want <= 0 or grant < (tonumber(ARGV[2 * n + i]) or 1) then
      lease = false
    end
    grants[i] = grant
  end
end
for i = 1, n do
  if lease and grants[i] > 0 then
    out[i + 1] = redis.call('INCRBY', KEYS[i], string.format('%d', grants[i]))
    redis.call('EXPIRE', KEYS[i], ARGV[3 * n + i])
  else
    grants[i] = 0
  end
  out[n + 1 + i] = grants[i]
end
return out
"""
