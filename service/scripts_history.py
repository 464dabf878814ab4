"""Lua scripts that read durable history and publish live events (the session scripts that write
history are in ``service.scripts``, whose docstring describes both layouts)."""

from __future__ import annotations

from service.scripts import ScriptSource

READ_HISTORY = r"""
-- KEYS: meta, history, events (the earlier layout's stream).
-- ARGV: after ('' = from the start), before ('' = to the end), limit, reverse (0|1).
-- after/before are exclusive ids; any id is placed by order, (ms, n) compared as numbers, so an
-- id that names no item (a popped item's) still bounds the page. An id of the earlier layout
-- (its ms at most the metadata's 'converted', its n below 'hbase': see upgrade()) counted every
-- event of its ms, not the items: it is placed by its ms alone, before that ms's items as
-- 'after' and past them as 'before', so a page may repeat an item of that ms, never skip one.
-- Returns {'ok', ordinal of the first item, item, ...} (items oldest first) | {'missing'} |
-- {'legacy'} (convert the session first)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'legacy'} end
local meta = redis.call('HMGET', KEYS[1], 'hbase', 'converted')
local base, converted = tonumber(meta[1] or '0'), tonumber(meta[2] or '-1')
local len = redis.call('LLEN', KEYS[2])
local function ms_at(i)
  return tonumber(string.match(redis.call('LINDEX', KEYS[2], i), '^(%d+)'))
end
-- the index of the first item whose id is > (strict) or >= the id
local function bound(id, strict)
  local ms, n = string.match(id, '^(%d+)%-?(%d*)$')
  ms, n = tonumber(ms), tonumber(n) or 0
  local i = n - base
  if i >= 0 and i < len and ms_at(i) == ms then
    if strict then return i + 1 end
    return i
  end
  if ms <= converted and n < base then n = strict and -1 or math.huge end
  local lo, hi = 0, len
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m, k = ms_at(mid), base + mid
    if m > ms or (m == ms and (k > n or (k == n and not strict))) then hi = mid
    else lo = mid + 1 end
  end
  return lo
end
local lo, hi = 0, len
if ARGV[1] ~= '' then lo = bound(ARGV[1], true) end
if ARGV[2] ~= '' then hi = bound(ARGV[2], false) end
local limit = tonumber(ARGV[3])
local first, last = lo, math.min(hi, lo + limit) - 1
if ARGV[4] == '1' then first, last = math.max(lo, hi - limit), hi - 1 end
local out = {'ok', base + first}
if last < first then return out end
local items = redis.call('LRANGE', KEYS[2], first, last)
for i = 1, #items do out[i + 2] = items[i] end
return out
"""

HISTORY_AT = r"""
-- KEYS: meta, history.  ARGV: id.  Returns 1 when the id names an item of the history (or is
-- '0-0', the start), else 0.
local ms, n = string.match(ARGV[1], '^(%d+)%-(%d+)$')
if not ms then return 0 end
if ms == '0' and n == '0' then return 1 end
local i = tonumber(n) - tonumber(redis.call('HGET', KEYS[1], 'hbase') or '0')
if i < 0 or i >= redis.call('LLEN', KEYS[2]) then return 0 end
local item = redis.call('LINDEX', KEYS[2], i)
if item and string.match(item, '^(%d+)') == ms then return 1 end
return 0
"""

TRIM_LIVE = r"""
-- KEYS: a live shard.  ARGV: the window's start (ms).  Drops the entries older than it, exactly.
-- The newest entry stays even then (the next entry's p names it, so a reader behind the window
-- still sees what it missed), but not its content: an entry of a session past the window gives
-- way to a marker with no session (s '') whose p names it; a Redis out of memory refuses the
-- marker, and the trim keeps the entry itself (the rest of the memory comes back all the same).
-- Returns the entries dropped.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not last then return 0 end
local keep = ARGV[1] .. '-0'
if tonumber(string.match(last[1], '^(%d+)')) < tonumber(ARGV[1]) then
  keep = last[1]
  local f = last[2]
  for i = 1, #f, 2 do
    if f[i] == 's' and f[i + 1] ~= '' then
      local marker = redis.pcall('XADD', KEYS[1], '*', 's', '', 'p', last[1])
      if type(marker) == 'string' then keep = marker end
    end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', keep)
"""

PUBLISH_LIVE = r"""
-- Cluster mode only (the live shard lives in another slot than the session).
-- KEYS: live shard.  ARGV: live_maxlen, live_window_ms, sid, the session's incarnation (its
-- ``inc``), then (history id, body) pairs.  Returns the live ids.
-- ``p``: the entry before, as in the session scripts' publish().
local out = {}
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local previous = last[1] and last[1][1] or ''
for i = 5, #ARGV, 2 do
  previous = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    's', ARGV[3], 'h', ARGV[i], 'e', ARGV[i + 1], 'c', ARGV[4], 'p', previous)
  out[#out + 1] = previous
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', '~', now - tonumber(ARGV[2]))
return out
"""

ALL = (
    ScriptSource("read_history", READ_HISTORY, session=False),
    ScriptSource("history_at", HISTORY_AT, session=False),
    ScriptSource("publish_live", PUBLISH_LIVE, session=False),
    ScriptSource("trim_live", TRIM_LIVE, session=False),
)
