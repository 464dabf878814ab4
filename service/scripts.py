"""The store's Lua scripts: every change to a session is exactly one of these, atomic on one slot.

Session scripts share one KEYS layout (built by ``TenantBase._script_keys``):

    KEYS[1..6]  meta, history, bookmarks, idem, turns,     (one session, one hash tag)
                events (the earlier layout's stream)
    KEYS[7..11] idx shard, exp shard, lifecycle stream,    (optional: present on a single Redis,
                pending-turn registry, live shard          where the index, the registry (see
                                                           ``service.pending``) and live events
                                                           are written in the same script; on a
                                                           Cluster they live in other slots and
                                                           ``TOUCH_INDEX``, ``PENDING_REGISTER``
                                                           and ``PUBLISH_LIVE`` follow)

and one ARGV head: lifecycle_maxlen, sid, live_maxlen, live_window_ms; each script's own
arguments follow from ARGV[5].

The worker answering a session's turns holds a lease in the metadata field ``lease``
(``<token>|<expiry ms>``, see ``LEASE``); a running turn's writes name the token and are refused
once another worker holds the lease, so a worker that lost it writes nothing more.

Times come from the server (``TIME``), so replicas of the API with skewed clocks agree. Domain
outcomes are returned as tables whose first element is a status word (``ok``, ``missing``,
``conflict``, ``limit``, ``dup``); Lua errors are reserved for bugs and Redis failures.

Durable history is a list of compact items ``<ms><code><data JSON>``: the server time in ms, a
one-letter code of the event type (``service.events.CODES``; a type without one is written out,
and a type never holds ``{``), then the event's ``data``. An item's id is ``<ms>-<n>``, ``n`` its
ordinal in the history, so ids order as the list does and a page is an LRANGE; the ms never go
back (an item takes the later of the clock and the previous item's ms). Live events are entries
``s`` (session id), ``h`` (history id of a durable event's copy, else empty), ``e`` (code and data),
``c`` (the session's incarnation) and ``p`` (the id of the entry before) of the tenant's live
stream, trimmed to a window of time (MINID) and count (MAXLEN).
"""

from __future__ import annotations

from dataclasses import dataclass

# Shared helpers, prepended to every session script.
_PRELUDE = r"""
-- codes of durable event types (service.events.CODES), and the transient types (TRANSIENT_TYPES)
local CODES = {['user.message'] = 'u', ['assistant.message'] = 'a', ['session.error'] = 'e',
  ['session.compaction_complete'] = 'c', ['abort'] = 'x', ['item'] = 'i'}
local TRANSIENT = {['session.start'] = true, ['assistant.turn_start'] = true,
  ['assistant.message_delta'] = true, ['assistant.turn_end'] = true, ['assistant.usage'] = true,
  ['session.idle'] = true, ['session.title_changed'] = true, ['session.compaction_start'] = true,
  ['item.popped'] = true, ['items.cleared'] = true}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Apply the session's TTL (or none, when infinite) to every key that exists, and keep the inline
-- index exact. Returns the expiry deadline in ms, or -1 for an infinite session.
local function refresh(sid, now)
  local meta = redis.call('HMGET', KEYS[1], 'ttl', 'infinite')
  local ttl_ms = tonumber(meta[1] or '0') * 1000
  local infinite = meta[2] == '1'
  for i = 1, 6 do
    if infinite then redis.call('PERSIST', KEYS[i])
    else redis.call('PEXPIRE', KEYS[i], ttl_ms) end
  end
  local deadline = -1
  if not infinite then deadline = now + ttl_ms end
  if #KEYS >= 8 then
    redis.call('ZADD', KEYS[7], now, sid)
    if infinite then redis.call('ZREM', KEYS[8], sid)
    else redis.call('ZADD', KEYS[8], deadline, sid) end
  end
  return deadline
end

-- The tenant's registry of sessions with pending turns (the watchdog's input, single Redis only).
local function pending_add(sid, now)
  if #KEYS >= 10 then redis.call('ZADD', KEYS[10], now, sid) end
end
local function pending_settle(sid)
  if #KEYS >= 10 and redis.call('LLEN', KEYS[5]) == 0 then redis.call('ZREM', KEYS[10], sid) end
end

-- Whether ``token`` holds the session's turn lease (expired or not: only another holder that
-- took it over after it expired makes it lost).
local function holds(token)
  local held = redis.call('HGET', KEYS[1], 'lease')
  return held ~= false and string.sub(held, 1, #token + 1) == token .. '|'
end

-- The id of a stream's newest entry ('' when it has none): the ``p`` of the next entry, which
-- lets a reader whose position is older than the ``p`` of the first entry it reads know that
-- the stream was trimmed past entries it never read.
local function newest(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  return last[1] and last[1][1] or ''
end

local function lifecycle(kind, sid, now)
  if #KEYS >= 9 then
    redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[1], '*',
      'type', kind, 'session_id', sid, 'at', tostring(now), 'p', newest(KEYS[9]))
  end
end

-- A live event on the tenant's live shard (single Redis; on a Cluster the caller publishes).
-- Returns its live id, or '' when the caller publishes. ``c`` is the session's incarnation (its
-- ``inc``, the microsecond it was created; ``created`` ms for a session created before ``inc``
-- was kept): readers pass over entries of an earlier session of the same id, even one deleted
-- and created again within a millisecond.
-- On a Cluster, a script that writes live events ends its reply with ``incarnation()`` for the
-- caller to publish them with.
local created = nil
local function incarnation()
  if not created then
    local v = redis.call('HMGET', KEYS[1], 'inc', 'created')
    created = v[1] or v[2] or ''
  end
  return created
end
-- ``p``: the entry before it (see newest()), kept across the script's entries.
local previous = nil
local function publish(sid, hid, body)
  if #KEYS >= 11 then
    previous = redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[3], '*',
      's', sid, 'h', hid, 'e', body, 'c', incarnation(), 'p', previous or newest(KEYS[11]))
    return previous
  end
  return ''
end

local function trim_live(now)
  if #KEYS >= 11 then redis.call('XTRIM', KEYS[11], 'MINID', '~', now - tonumber(ARGV[4])) end
end

-- Convert a session written in the earlier layout (one stream of every event, KEYS[6]) into
-- durable history: its durable events become items (ids <ms>-<n>), the rest is dropped, and every
-- id the session refers to (pending turns, idempotency keys, bookmarks, compacted_through,
-- last_event_id, and the reply_to and through of the service's own events) moves to the new id
-- of its event, or of the last durable event before it. The new ids never equal old ones: the
-- items' ordinals start at the number of old entries (the metadata's 'hbase'), above any old
-- id's sequence number, and 'converted' keeps the last converted ms, so an id with an ms at most
-- that and an n below 'hbase' is known as one of the earlier layout (``read_history``).
-- Returns the number of items written, or -1 when the session has nothing to convert.
local function upgrade()
  if redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
  local rows = redis.call('XRANGE', KEYS[6], '-', '+')
  local base = tonumber(redis.call('HGET', KEYS[1], 'hbase') or '0')
  if base == 0 and redis.call('LLEN', KEYS[2]) == 0 then
    base = #rows
    redis.call('HSET', KEYS[1], 'hbase', base)
  end
  local n = base + redis.call('LLEN', KEYS[2])
  local map, last, last_ms, count = {}, '0-0', 0, 0
  for _, row in ipairs(rows) do
    local f, body = row[2], ''
    for i = 1, #f, 2 do if f[i] == 'e' then body = f[i + 1] end end
    local typ, data = string.match(body, '^{"type":"([^"{]*)","data":(.*)}$')
    local code = typ and (CODES[typ] or (not TRANSIENT[typ] and typ))
    if code then
      local ms = math.max(tonumber(string.match(row[1], '^(%d+)')), last_ms)
      if code == 'a' or code == 'e' or code == 'c' then
        -- a quote ends a key only outside a string (inside one it is escaped), so only the
        -- service's own fields match; the ids they name came earlier in the stream
        data = string.gsub(data, '"(%a[%a_]*)":"(%d+%-%d+)"', function(field, old)
          if (field == 'reply_to' or field == 'through') and map[old] then
            return '"' .. field .. '":"' .. map[old] .. '"'
          end
        end)
      end
      redis.call('RPUSH', KEYS[2], ms .. code .. data)
      last, last_ms, n, count = ms .. '-' .. n, ms, n + 1, count + 1
    end
    map[row[1]] = last
  end
  local turns = redis.call('LRANGE', KEYS[5], 0, -1)
  if #turns > 0 then
    redis.call('DEL', KEYS[5])
    for _, t in ipairs(turns) do redis.call('RPUSH', KEYS[5], map[t] or t) end
  end
  local idem = redis.call('HGETALL', KEYS[4])
  for i = 1, #idem, 2 do
    if map[idem[i + 1]] then redis.call('HSET', KEYS[4], idem[i], map[idem[i + 1]]) end
  end
  local marks = redis.call('HGETALL', KEYS[3])
  for i = 1, #marks, 2 do
    local moved = string.gsub(marks[i + 1], '"event_id":"([%d%-]+)"',
      function(old) return '"event_id":"' .. (map[old] or old) .. '"' end)
    redis.call('HSET', KEYS[3], marks[i], moved)
  end
  local through = redis.call('HGET', KEYS[1], 'compacted_through')
  if through and map[through] then
    redis.call('HSET', KEYS[1], 'compacted_through', map[through])
  end
  redis.call('HSET', KEYS[1], 'events', n - base, 'converted', last_ms)
  if last ~= '0-0' then redis.call('HSET', KEYS[1], 'last_event_id', last)
  else redis.call('HDEL', KEYS[1], 'last_event_id') end
  redis.call('DEL', KEYS[6])
  -- the rewritten keys keep the session's expiry (a conversion is not a write of the user's)
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl > 0 then
    for i = 2, 5 do redis.call('PEXPIRE', KEYS[i], pttl) end
  end
  return count
end
"""

CREATE_SESSION = r"""
-- ARGV: (head), ttl_s, infinite(0|1), max_sessions(0=unchecked), start_body (a live event),
--       then field/value pairs of further metadata. On a single Redis, KEYS[12..] are the
--       idx/exp pairs of all the tenant's index shards: the limit counts every shard.
-- Returns {'ok', now, live_id, deadline, incarnation} | {'conflict'} | {'limit', live}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then return {'conflict'} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local inc = clock[1] .. string.format('%06d', tonumber(clock[2]))
local max = tonumber(ARGV[7])
if max > 0 and #KEYS >= 12 then
  -- KEYS[12..]: the idx/exp pair of every index shard of the tenant (a single Redis)
  local live = 0
  for i = 12, #KEYS, 2 do
    live = live + redis.call('ZCARD', KEYS[i]) - redis.call('ZCOUNT', KEYS[i + 1], '-inf', now)
  end
  if live >= max then return {'limit', live} end
end
-- the first write may grow memory: Redis refuses it when full, and so the whole script (a
-- script's later writes are no longer checked, so nothing may be written before it)
redis.call('HSET', KEYS[1], 'id', sid, 'created', now, 'modified', now, 'ttl', ARGV[5],
  'infinite', ARGV[6], 'events', 0, 'messages', 0, 'inc', inc)
-- an earlier session of this id that expired before its sweep is announced now, before this one
if #KEYS >= 8 and redis.call('ZREM', KEYS[8], sid) == 1 then
  lifecycle('session.expired', sid, now)
end
-- leftovers of an earlier session of this id (expired before its sweep) are not its history
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local id = publish(sid, '', ARGV[8])
trim_live(now)
local deadline = refresh(sid, now)
lifecycle('session.created', sid, now)
return {'ok', now, id, deadline, inc}
"""

APPEND_EVENTS = r"""
-- ARGV: (head), idempotency_key('' = none), turn_op, turn_id, counters, lease_token ('' = none),
--       most pending turns ('enqueue' past it is refused: {'busy'}; '0' = unchecked),
--       then one argument per event: 'D' (durable: history and live) or 'L' (live only), then
--       its code and data.
-- turn_op: 'none'; 'enqueue' (the first event starts a pending turn); 'guard' (append only while
-- turn_id is the oldest pending turn, and lease_token, when given, holds the lease); 'complete'
-- (guard, then pop it: a retried or aborted turn cannot reply twice); 'abort' (append only if
-- turns are pending, then drop them all).
-- counters: 'name=n,name=n' increments of metadata counters (messages, tokens).
-- Returns {'ok', now, deadline, id1, id2, ... [, incarnation on a Cluster]} | {'missing'} |
-- {'dup', first_id} | {'stale'} | {'store'} ('enqueue' on a storage-only session: it never runs
-- a turn) | {'busy'} ('enqueue' while the most turns are pending)
-- (an id is the history id of a durable event, else its live id: '' when the caller publishes)
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[6] == 'enqueue' and redis.call('HGET', KEYS[1], 'mode') == 'store' then
  return {'store'}
end
upgrade()
local idem = ARGV[5]
if idem ~= '' then
  local prev = redis.call('HGET', KEYS[4], idem)
  if prev then return {'dup', prev} end
end
local op = ARGV[6]
if op == 'complete' or op == 'guard' then
  if redis.call('LINDEX', KEYS[5], 0) ~= ARGV[7] then return {'stale'} end
  if ARGV[9] ~= '' and not holds(ARGV[9]) then return {'stale'} end
end
if op == 'abort' and redis.call('LLEN', KEYS[5]) == 0 then return {'stale'} end
local most = tonumber(ARGV[10])
if op == 'enqueue' and most > 0 and redis.call('LLEN', KEYS[5]) >= most then return {'busy'} end
local now = now_ms()
local meta = redis.call('HMGET', KEYS[1], 'last_event_id', 'hbase')
local ms = math.max(now, tonumber(string.match(meta[1] or '', '^(%d+)') or '0'))
local n = tonumber(meta[2] or '0') + redis.call('LLEN', KEYS[2])
local out = {'ok', now, 0}
local durable, last = 0, nil
for i = 11, #ARGV do
  local body, hid = string.sub(ARGV[i], 2), ''
  if string.byte(ARGV[i], 1) == 68 then -- 'D'
    hid = ms .. '-' .. n
    redis.call('RPUSH', KEYS[2], ms .. body)
    n, durable, last = n + 1, durable + 1, hid
  end
  local lid = publish(sid, hid, body)
  if hid ~= '' then out[#out + 1] = hid else out[#out + 1] = lid end
end
trim_live(now)
redis.call('HSET', KEYS[1], 'modified', now)
if last then redis.call('HSET', KEYS[1], 'last_event_id', last) end
if durable > 0 then redis.call('HINCRBY', KEYS[1], 'events', durable) end
for name, k in string.gmatch(ARGV[8], '([%w_]+)=(%-?%d+)') do
  redis.call('HINCRBY', KEYS[1], name, k)
end
if idem ~= '' then
  redis.call('HSET', KEYS[4], idem, out[4])
  prune_idempotency_keys(KEYS[4])
end
if op == 'enqueue' then redis.call('RPUSH', KEYS[5], out[4]); pending_add(sid, now)
elseif op == 'complete' then redis.call('LPOP', KEYS[5]); pending_settle(sid)
elseif op == 'abort' then redis.call('DEL', KEYS[5]); pending_settle(sid) end
out[3] = refresh(sid, now)
if #KEYS < 11 then out[#out + 1] = incarnation() end
return out
"""

UPDATE_SESSION = r"""
-- ARGV: (head), ttl_s('' = keep), infinite(''|0|1), n, then n field/expected pairs
--       (conditions: the write happens only if every field holds its expected value, a missing
--       field counting as ''), then field/value pairs.
-- Returns {'ok', now, deadline} | {'missing'} | {'conflict'} (a condition did not hold)
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local first = 8 + 2 * tonumber(ARGV[7])
for i = 8, first - 1, 2 do
  if (redis.call('HGET', KEYS[1], ARGV[i]) or '') ~= ARGV[i + 1] then return {'conflict'} end
end
upgrade()
local now = now_ms()
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'ttl', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'infinite', ARGV[6]) end
for i = first, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'modified', now)
local deadline = refresh(sid, now)
lifecycle('session.updated', sid, now)
return {'ok', now, deadline}
"""

DELETE_SESSION = r"""
-- ARGV: (head), expected_modified ('' = unconditional).
-- Deletes every key and index entry of a live session and emits 'session.deleted'. With
-- expected_modified, refuses (-1) a session written since or with a pending turn: cleanup never
-- deletes a session in use. A session already gone (expired) is left to the sweeper, which emits
-- its one 'session.expired'. Returns the server time in ms (deleted) | 0 (no such session) |
-- -1 (refused).
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[5] ~= '' then
  if redis.call('HGET', KEYS[1], 'modified') ~= ARGV[5] or redis.call('LLEN', KEYS[5]) > 0 then
    return -1
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
if #KEYS >= 8 then
  redis.call('ZREM', KEYS[7], sid)
  redis.call('ZREM', KEYS[8], sid)
end
pending_settle(sid)
local now = now_ms()
lifecycle('session.deleted', sid, now)
return now
"""

SET_BOOKMARK = r"""
-- ARGV: (head), name, partial_json ('{"name":..,"description":..,...}'), most bookmarks a
--       session may hold (a new name past it is refused: {'limit'}).
-- The bookmark points at the session's last durable event and records how many messages
-- preceded it. Returns {'ok', stored_json} | {'missing'} | {'limit'}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HEXISTS', KEYS[3], ARGV[5]) == 0
    and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[7]) then
  return {'limit'}
end
upgrade()
local now = now_ms()
local meta = redis.call('HMGET', KEYS[1], 'last_event_id', 'messages')
local json = '{"event_id":"' .. (meta[1] or '0-0') .. '","message_count":' .. (meta[2] or '0')
  .. ',"created":' .. now .. ',' .. string.sub(ARGV[6], 2)
redis.call('HSET', KEYS[3], ARGV[5], json)
redis.call('HSET', KEYS[1], 'modified', now)
refresh(sid, now)
return {'ok', json}
"""

DELETE_BOOKMARK = r"""
-- ARGV: (head), name.  Returns {'ok', removed(0|1)} | {'missing'}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local now = now_ms()
local removed = redis.call('HDEL', KEYS[3], ARGV[5])
redis.call('HSET', KEYS[1], 'modified', now)
refresh(sid, now)
return {'ok', removed}
"""

LIST_PAGE = r"""
-- KEYS: idx shard, exp shard.  ARGV: now_ms('' = server time), max_score('+inf' or number),
--       after_member('' = none), count, scan_budget.
-- Walks the index newest first from the cursor (score, member), skipping entries whose expiry
-- deadline has passed. Returns {live_flat, suspect_flat, exhausted(0|1), last_member, last_score}:
-- *_flat = member, score, ...; last_* = the last entry examined (the shard's frontier).
-- "Suspect" entries look expired by the index; the caller confirms them (cluster mode) or
-- drops them.
local now = tonumber(ARGV[1])
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local max = ARGV[2]
local after = ARGV[3]
local count = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local live, suspect = {}, {}
local offset, found, scanned = 0, 0, 0
local last_m, last_s = after, max
local batch = count + 16
while found < count and scanned < budget do
  local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES',
    'LIMIT', offset, batch)
  if #rows == 0 then return {live, suspect, 1, last_m, last_s} end
  for i = 1, #rows, 2 do
    local m, s = rows[i], rows[i + 1]
    scanned = scanned + 1
    if not (after ~= '' and s == max and m >= after) then
      last_m, last_s = m, s
      local dl = redis.call('ZSCORE', KEYS[2], m)
      if dl and tonumber(dl) <= now then
        suspect[#suspect + 1] = m; suspect[#suspect + 1] = s
      else
        live[#live + 1] = m; live[#live + 1] = s
        found = found + 1
        if found >= count then return {live, suspect, 0, last_m, last_s} end
      end
    end
  end
  offset = offset + #rows / 2
  if #rows / 2 < batch then return {live, suspect, 1, last_m, last_s} end
end
return {live, suspect, 0, last_m, last_s}
"""

TOUCH_INDEX = r"""
-- Cluster mode only (the index lives in another slot). KEYS: idx shard, exp shard, gone shard.
-- ARGV: sid, modified_ms (by the session's server), deadline_ms (-1 = infinite),
--       op ('touch' | 'remove'), tombstone_ms (how long a delete is remembered).
-- Calls may land out of order; the session's modified time orders them:
-- * 'remove' drops the entries and remembers the delete (in 'gone', at its time), so a touch of
--   an earlier write landing after it does not bring the deleted session back;
-- * 'touch' of a write older than the newest one indexed, or than a delete, changes nothing (an
--   earlier write's expiry must not replace a later one's: infinite -> finite keeps its entry).
-- Returns 1 (applied) | 0 (stale, ignored).
local sid, modified = ARGV[1], tonumber(ARGV[2])
if ARGV[4] == 'remove' then
  redis.call('ZREM', KEYS[1], sid); redis.call('ZREM', KEYS[2], sid)
  redis.call('ZADD', KEYS[3], 'GT', modified, sid)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', modified - tonumber(ARGV[5]))
  return 1
end
local gone = redis.call('ZSCORE', KEYS[3], sid)
if gone and tonumber(gone) >= modified then return 0 end
local cur = redis.call('ZSCORE', KEYS[1], sid)
if cur and tonumber(cur) > modified then return 0 end
if gone then redis.call('ZREM', KEYS[3], sid) end
redis.call('ZADD', KEYS[1], modified, sid)
if ARGV[3] == '-1' then redis.call('ZREM', KEYS[2], sid)
else redis.call('ZADD', KEYS[2], ARGV[3], sid) end
return 1
"""

PRUNE_INDEX = r"""
-- Cluster mode only: the repair pass's step for an index entry whose session was found gone.
-- KEYS: idx shard, exp shard, gone shard.  ARGV: sid, modified_ms the entry had when read.
-- Removes the entries unless the session was written since (its entry moved). Returns 0 (moved:
-- nothing changed) | 1 (removed, and no delete is remembered: the session expired, and the
-- caller announces it) | 2 (removed; the session was deleted, which was announced).
local sid = ARGV[1]
local cur = redis.call('ZSCORE', KEYS[1], sid)
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], sid); redis.call('ZREM', KEYS[2], sid)
if redis.call('ZSCORE', KEYS[3], sid) then return 2 end
return 1
"""


SWEEP_SESSION = r"""
-- ARGV: (head).
-- The sweeper's step for an index entry past its deadline. A session whose metadata still exists
-- is alive: nothing changes. Otherwise its leftover keys go; on a single Redis its index entries
-- go too, and 'session.expired' is emitted only when THIS call removed the expiry entry, so
-- overlapping sweeps (or a sweep after a delete) never emit a second event.
-- Returns -1 (alive) | 1 (swept here: entries removed, event emitted) | 0 (leftovers removed; on a
-- Cluster the caller continues with SWEEP_INDEX, on a single Redis someone else swept it).
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
pending_settle(sid)
if #KEYS < 8 then return 0 end
local removed = redis.call('ZREM', KEYS[8], sid)
redis.call('ZREM', KEYS[7], sid)
if removed == 1 then
  lifecycle('session.expired', sid, now_ms())
  return 1
end
return 0
"""

SWEEP_INDEX = r"""
-- Cluster mode only (the index lives in another slot). KEYS: idx shard, exp shard.  ARGV: sid.
-- Removes the session's index entries if its expiry deadline has passed by the server clock (a
-- session re-created meanwhile has a future deadline and keeps its entries).
-- Returns 1 when this call removed the expiry entry (the caller emits 'session.expired'), else 0.
local dl = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not dl then return 0 end
local t = redis.call('TIME')
if tonumber(dl) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

SEAT = r"""
-- Cluster mode: the tenant's session seats (one slot). KEYS: seats.
-- ARGV: op ('take' | 'release'), sid, limit (0 = none), min_age_ms (release: only a seat taken
-- at least that long ago, so a create still in flight keeps its seat; '' = any).
-- 'take' returns 1 (taken) | 2 (the id holds a seat already) | 0 (the tenant is at its limit);
-- 'release' returns 1 when a seat was released, else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'release' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if not score then return 0 end
  if ARGV[4] ~= '' and tonumber(score) > now - tonumber(ARGV[4]) then return 0 end
  return redis.call('ZREM', KEYS[1], ARGV[2])
end
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 2 end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class ScriptSource:
    name: str
    body: str
    session: bool  # uses the session KEYS layout and the shared prelude

    @property
    def text(self) -> str:
        return (_PRELUDE + _PRUNE_IDEMPOTENCY + self.body) if self.session else self.body


COUNT_LIVE = r"""
-- Read only. KEYS: idx shard, exp shard.  ARGV: now_ms ('' = the server's TIME).
-- Returns {index entries, expiry entries, expiry entries past their deadline}: the live count is
-- the first minus the last, by the clock of the server holding the shard, never the API host's.
local now = tonumber(ARGV[1])
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[2], '-inf', now)}
"""

# Idempotency keys of a session: a session that never expires would keep every key forever, so
# once the hash holds IDEMPOTENCY_KEYS_KEPT + IDEMPOTENCY_PRUNE_BATCH keys, the oldest (by the event
# id each maps to) go, down to IDEMPOTENCY_KEYS_KEPT. A retried send is recognised as long as it
# is among the session's newest IDEMPOTENCY_KEYS_KEPT keyed sends; pruning runs once per
# IDEMPOTENCY_PRUNE_BATCH sends, so its cost per send stays small.
IDEMPOTENCY_KEYS_KEPT = 500
IDEMPOTENCY_PRUNE_BATCH = 100
_PRUNE_IDEMPOTENCY = r"""
local function prune_idempotency_keys(key)
  if redis.call('HLEN', key) < KEPT + BATCH then return end
  local flat = redis.call('HGETALL', key)
  local pairs_ = {}
  for i = 1, #flat, 2 do
    local ms, seq = string.match(flat[i + 1], '^(%d+)-(%d+)$')
    pairs_[#pairs_ + 1] = {tonumber(ms or '0'), tonumber(seq or '0'), flat[i]}
  end
  table.sort(pairs_, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i = 1, #pairs_ - KEPT do redis.call('HDEL', key, pairs_[i][3]) end
end
""".replace("KEPT", str(IDEMPOTENCY_KEYS_KEPT)).replace("BATCH", str(IDEMPOTENCY_PRUNE_BATCH))


LEASE = r"""
-- ARGV: (head), op ('take' | 'renew' | 'release'), token, lease_ms.
-- The lease of the worker answering the session's turns: the metadata field 'lease' =
-- '<token>|<expiry ms>' (it goes with the session and costs no key of its own). 'take' sets it
-- unless another token's lease is still live; 'renew' extends it while this token holds it (a
-- lease that expired during a Redis stall and that nobody took over is still this token's);
-- 'release' drops it while this token holds it.
-- Returns 1 (taken, renewed, released) | 2 (taken over from another token whose lease had
-- expired) | 0 (another token holds it) | -1 (no such session).
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now = now_ms()
local op, token = ARGV[5], ARGV[6]
local held = redis.call('HGET', KEYS[1], 'lease')
local result = 1
if held and string.sub(held, 1, #token + 1) ~= token .. '|' then
  local expiry = tonumber(string.match(held, '|(%d+)$') or '0')
  if op ~= 'take' or expiry > now then return 0 end
  result = 2  -- taken over from a holder whose lease expired
elseif not held and op ~= 'take' then
  return 0
end
if op == 'release' then redis.call('HDEL', KEYS[1], 'lease'); return 1 end
redis.call('HSET', KEYS[1], 'lease', token .. '|' .. (now + tonumber(ARGV[7])))
return result
"""

TURN_STATE = r"""
-- ARGV: (head).  Read only: what the watchdog decides on.
-- Returns {exists(0|1), pending turns, oldest pending turn ('' = none), lease live(0|1),
-- lease expiry ms (0 = none)}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, '', 0, 0} end
local held = redis.call('HGET', KEYS[1], 'lease')
local live, expiry = 0, 0
if held then expiry = tonumber(string.match(held, '|(%d+)$') or '0') end
if expiry > now_ms() then live = 1 end
return {1, redis.call('LLEN', KEYS[5]), redis.call('LINDEX', KEYS[5], 0) or '', live, expiry}
"""

PENDING_REGISTER = r"""
-- Cluster mode (the registry lives in another slot than the session). KEYS: registry.
-- ARGV: sid. Registers the session before its turn is appended, by the server clock.
-- Returns {score set, 1 if the session was registered already else 0, its score before (0:
-- none)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local had = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
if had then return {now, 1, tonumber(had)} end
return {now, 0, 0}
"""

PENDING_SETTLE = r"""
-- KEYS: registry.  ARGV: sid, score (seen for 'prune' and 'undo'; to set for 'bump', 0 = now),
-- op ('prune' | 'undo' | 'bump'), the score before (for 'undo').
-- 'prune' removes the entry only if nobody registered the session again since it was read (its
-- score is unchanged); 'undo' takes back a registration that queued no turn, on the same
-- condition (the score before it again, or no entry when there was none); 'bump' moves a still
-- registered entry to the score given (the time it is to be looked at again, less the
-- watchdog's wait) or to now (a rescue was dispatched).
-- Returns 1 when changed, else 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if ARGV[3] == 'prune' or ARGV[3] == 'undo' then
  if tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
  local before = tonumber(ARGV[4] or '0')
  if ARGV[3] == 'undo' and before > 0 then
    redis.call('ZADD', KEYS[1], 'XX', before, ARGV[1])
    return 1
  end
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
local at = tonumber(ARGV[2])
if at <= 0 then
  local t = redis.call('TIME')
  at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('ZADD', KEYS[1], 'XX', at, ARGV[1])
return 1
"""


MIGRATE_SESSION = r"""
-- ARGV: (head).  Converts a session of the earlier layout (see upgrade() in the prelude).
-- Returns the number of history items written | -1 (nothing to convert) | -2 (no such session)
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
return upgrade()
"""


ALL = (
    ScriptSource("create_session", CREATE_SESSION, session=True),
    ScriptSource("migrate_session", MIGRATE_SESSION, session=True),
    ScriptSource("append_events", APPEND_EVENTS, session=True),
    ScriptSource("update_session", UPDATE_SESSION, session=True),
    ScriptSource("delete_session", DELETE_SESSION, session=True),
    ScriptSource("set_bookmark", SET_BOOKMARK, session=True),
    ScriptSource("delete_bookmark", DELETE_BOOKMARK, session=True),
    ScriptSource("list_page", LIST_PAGE, session=False),
    ScriptSource("touch_index", TOUCH_INDEX, session=False),
    ScriptSource("sweep_session", SWEEP_SESSION, session=True),
    ScriptSource("sweep_index", SWEEP_INDEX, session=False),
    ScriptSource("lease", LEASE, session=True),
    ScriptSource("turn_state", TURN_STATE, session=True),
    ScriptSource("pending_register", PENDING_REGISTER, session=False),
    ScriptSource("pending_settle", PENDING_SETTLE, session=False),
    ScriptSource("count_live", COUNT_LIVE, session=False),
    ScriptSource("seat", SEAT, session=False),
    ScriptSource("prune_index", PRUNE_INDEX, session=False),
)
