"""Lua scripts of storage-only sessions: items appended, popped and cleared by the app's own model
loop (see ``service.store.items``). They share the session KEYS layout, ARGV head and prelude of
``service.scripts``; each refuses a session that runs turns (``{'turns'}``).

An item is a history entry of type ``item`` (code ``i``): ``<ms>i<item JSON>``, its id
``<ms>-<n>``. A pop or a clear removes entries from the end, so an ordinal ``n`` is used again;
the metadata field ``floor`` (the ms after the last removed entry) makes the next item's ms
larger, so an id never names two items and ids keep the history's order.
"""

from __future__ import annotations

from service.scripts import ScriptSource

APPEND_ITEMS = r"""
-- ARGV: (head), idempotency_key ('' = none), how many of the items are messages (a user or
-- assistant role), then one body per item ('i' and its JSON).
-- Returns {'ok', now, deadline, id1, id2, ... [, incarnation on a Cluster]} | {'missing'} |
-- {'turns'} | {'dup', first_id}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HGET', KEYS[1], 'mode') ~= 'store' then return {'turns'} end
local idem = ARGV[5]
if idem ~= '' then
  local prev = redis.call('HGET', KEYS[4], idem)
  if prev then return {'dup', prev} end
end
local now = now_ms()
local meta = redis.call('HMGET', KEYS[1], 'last_event_id', 'hbase', 'floor')
local ms = math.max(now, tonumber(string.match(meta[1] or '', '^(%d+)') or '0'),
  tonumber(meta[3] or '0'))
local n = tonumber(meta[2] or '0') + redis.call('LLEN', KEYS[2])
local out, rows = {'ok', now, 0}, {}
for i = 7, #ARGV do
  rows[#rows + 1] = ms .. ARGV[i]
  local hid = ms .. '-' .. n
  publish(sid, hid, ARGV[i])
  out[#out + 1] = hid
  n = n + 1
end
redis.call('RPUSH', KEYS[2], unpack(rows))
trim_live(now)
redis.call('HSET', KEYS[1], 'modified', now, 'last_event_id', out[#out])
redis.call('HINCRBY', KEYS[1], 'events', #rows)
if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[1], 'messages', ARGV[6]) end
if idem ~= '' then
  redis.call('HSET', KEYS[4], idem, out[4])
  prune_idempotency_keys(KEYS[4])
end
out[3] = refresh(sid, now)
if #KEYS < 11 then out[#out + 1] = incarnation() end
return out
"""

POP_ITEM = r"""
-- ARGV: (head).  Removes the newest item (a bookmark of it moves to the item before).
-- Returns {'ok', now, deadline, id, item, incarnation} | {'empty', now, deadline} | {'missing'} |
-- {'turns'}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HGET', KEYS[1], 'mode') ~= 'store' then return {'turns'} end
local now = now_ms()
local item = redis.call('RPOP', KEYS[2])
if not item then return {'empty', now, refresh(sid, now)} end
local meta = redis.call('HMGET', KEYS[1], 'hbase', 'floor')
local n = tonumber(meta[1] or '0') + redis.call('LLEN', KEYS[2])
local ms = tonumber(string.match(item, '^(%d+)'))
local id = ms .. '-' .. n
redis.call('HSET', KEYS[1], 'floor', math.max(ms + 1, tonumber(meta[2] or '0')), 'modified', now)
local last, before = redis.call('LINDEX', KEYS[2], -1), '0-0'
if last then
  before = string.match(last, '^(%d+)') .. '-' .. (n - 1)
  redis.call('HSET', KEYS[1], 'last_event_id', before)
else
  redis.call('HDEL', KEYS[1], 'last_event_id')
end
redis.call('HINCRBY', KEYS[1], 'events', -1)
local decoded, body = pcall(cjson.decode, string.sub(item, #string.match(item, '^%d+') + 2))
local message = decoded and type(body) == 'table'
  and (body.role == 'user' or body.role == 'assistant')
if message and tonumber(redis.call('HGET', KEYS[1], 'messages') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'messages', -1)
end
-- A bookmark of the popped item now marks the item before it, with the messages before that.
local marks, at = redis.call('HGETALL', KEYS[3]), '{"event_id":"' .. id .. '","message_count":'
for i = 2, #marks, 2 do
  if string.sub(marks[i], 1, #at) == at then
    local count, rest = string.match(marks[i], '^(%d+)(.*)$', #at + 1)
    count = tonumber(count)
    if message and count > 0 then count = count - 1 end
    redis.call('HSET', KEYS[3], marks[i - 1],
      '{"event_id":"' .. before .. '","message_count":' .. count .. rest)
  end
end
publish(sid, '', 'item.popped{"id":"' .. id .. '"}')
trim_live(now)
return {'ok', now, refresh(sid, now), id, item, incarnation()}
"""

CLEAR_ITEMS = r"""
-- ARGV: (head).  Drops every item and bookmark; the session, its id, TTL, labels, counters of
-- tokens and idempotency keys stay.
-- Returns {'ok', now, deadline, items removed, incarnation} | {'missing'} | {'turns'}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HGET', KEYS[1], 'mode') ~= 'store' then return {'turns'} end
local now = now_ms()
local count = redis.call('LLEN', KEYS[2])
if count > 0 then
  local ms = tonumber(string.match(redis.call('LINDEX', KEYS[2], -1), '^(%d+)'))
  local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
  redis.call('HSET', KEYS[1], 'floor', math.max(ms + 1, floor))
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[1], 'last_event_id', 'hbase')
redis.call('HSET', KEYS[1], 'events', 0, 'messages', 0, 'modified', now)
publish(sid, '', 'items.cleared{"count":' .. count .. '}')
trim_live(now)
return {'ok', now, refresh(sid, now), count, incarnation()}
"""

ALL = (
    ScriptSource("append_items", APPEND_ITEMS, session=True),
    ScriptSource("pop_item", POP_ITEM, session=True),
    ScriptSource("clear_items", CLEAR_ITEMS, session=True),
)
