"""The earlier storage layout, as the service wrote it before durable history was split from live
events: one stream per session holding every event as ``e`` = ``{"type":...,"data":...}``.

The scripts below are verbatim copies of that version's, so tests can write sessions exactly as
a deployment of it left them and check that today's code reads and converts them.
"""

from __future__ import annotations

import json
from typing import Any

from service import keys as K
from service.connections import LuaScript

# fmt: off
_PRELUDE = r"""
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
  for i = 1, 5 do
    if infinite then redis.call('PERSIST', KEYS[i])
    else redis.call('PEXPIRE', KEYS[i], ttl_ms) end
  end
  local deadline = -1
  if not infinite then deadline = now + ttl_ms end
  if #KEYS >= 7 then
    redis.call('ZADD', KEYS[6], now, sid)
    if infinite then redis.call('ZREM', KEYS[7], sid)
    else redis.call('ZADD', KEYS[7], deadline, sid) end
  end
  return deadline
end

local function lifecycle(kind, sid, now)
  if #KEYS >= 8 then
    redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[1], '*',
      'type', kind, 'session_id', sid, 'at', tostring(now))
  end
end
"""

CREATE_SESSION = r"""
-- ARGV: lifecycle_maxlen, sid, ttl_s, infinite(0|1), max_sessions(0=unchecked), start_event_json,
--       then field/value pairs of further metadata.
-- Returns {'ok', now, event_id, deadline} | {'conflict'} | {'limit', live}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then return {'conflict'} end
local now = now_ms()
local max = tonumber(ARGV[5])
if max > 0 and #KEYS >= 7 then
  local live = redis.call('ZCARD', KEYS[6]) - redis.call('ZCOUNT', KEYS[7], '-inf', now)
  if live >= max then return {'limit', live} end
end
redis.call('HSET', KEYS[1], 'id', sid, 'created', now, 'modified', now, 'ttl', ARGV[3],
  'infinite', ARGV[4], 'events', 1, 'messages', 0)
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[6])
redis.call('HSET', KEYS[1], 'last_event_id', id)
local deadline = refresh(sid, now)
lifecycle('session.created', sid, now)
return {'ok', now, id, deadline}
"""

APPEND_EVENTS = r"""
-- ARGV: lifecycle_maxlen, sid, idempotency_key('' = none), turn_op, turn_id, counters,
--       then one JSON per event.
-- turn_op: 'none'; 'enqueue' (the first event starts a pending turn); 'guard' (append only while
-- turn_id is the oldest pending turn); 'complete' (guard, then pop it: a retried or aborted turn
-- cannot reply twice); 'abort' (append only if turns are pending, then drop them all).
-- counters: 'name=n,name=n' increments of metadata counters (messages, tokens).
-- Returns {'ok', now, deadline, id1, id2, ...} | {'missing'} | {'dup', first_id} | {'stale'}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local idem = ARGV[3]
if idem ~= '' then
  local prev = redis.call('HGET', KEYS[4], idem)
  if prev then return {'dup', prev} end
end
local op = ARGV[4]
if (op == 'complete' or op == 'guard') and redis.call('LINDEX', KEYS[5], 0) ~= ARGV[5] then
  return {'stale'}
end
if op == 'abort' and redis.call('LLEN', KEYS[5]) == 0 then return {'stale'} end
local now = now_ms()
local out = {'ok', now, 0}
local last
for i = 7, #ARGV do
  last = redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
  out[#out + 1] = last
end
redis.call('HSET', KEYS[1], 'modified', now, 'last_event_id', last)
redis.call('HINCRBY', KEYS[1], 'events', #ARGV - 6)
for name, n in string.gmatch(ARGV[6], '([%w_]+)=(%-?%d+)') do
  redis.call('HINCRBY', KEYS[1], name, n)
end
if idem ~= '' then redis.call('HSET', KEYS[4], idem, out[4]) end
if op == 'enqueue' then redis.call('RPUSH', KEYS[5], out[4])
elseif op == 'complete' then redis.call('LPOP', KEYS[5])
elseif op == 'abort' then redis.call('DEL', KEYS[5]) end
out[3] = refresh(sid, now)
return out
"""

SET_BOOKMARK = r"""
-- ARGV: lifecycle_maxlen, sid, name, partial_json ('{"name":..,"description":..,...}').
-- The bookmark points at the session's last event and records how many messages preceded it.
-- Returns {'ok', stored_json} | {'missing'}
local sid = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local now = now_ms()
local meta = redis.call('HMGET', KEYS[1], 'last_event_id', 'messages')
local json = '{"event_id":"' .. (meta[1] or '0-0') .. '","message_count":' .. (meta[2] or '0')
  .. ',"created":' .. now .. ',' .. string.sub(ARGV[4], 2)
redis.call('HSET', KEYS[3], ARGV[3], json)
redis.call('HSET', KEYS[1], 'modified', now)
refresh(sid, now)
return {'ok', json}
"""
# fmt: on


class LegacyWriter:
    """Writes one tenant's sessions with the earlier scripts (single Redis layout)."""

    def __init__(self, redis: Any, prefix: str, tenant: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.tenant = tenant
        self._create = LuaScript(redis, _PRELUDE + CREATE_SESSION)
        self._append = LuaScript(redis, _PRELUDE + APPEND_EVENTS)
        self._bookmark = LuaScript(redis, _PRELUDE + SET_BOOKMARK)

    def keys(self, sid: str) -> list[str]:
        s = K.session_keys(self.prefix, self.tenant, sid)
        idx = K.index_keys(self.prefix, self.tenant, 0)
        life = K.lifecycle_key(self.prefix, self.tenant)
        return [s.meta, s.events, s.bookmarks, s.idem, s.turns, idx.idx, idx.exp, life]

    async def create(self, sid: str, *, model: str = "m", ttl: int = 3600) -> None:
        start = json.dumps({"type": "session.start", "data": {"sessionId": sid, "model": model}})
        fields = ["model", model, "system_message", "", "streaming", 0, "name", "",
                  "summary", "", "labels", "{}"]  # fmt: skip
        await self._create(keys=self.keys(sid), args=[10_000, sid, ttl, 0, 0, start, *fields])

    async def append(
        self,
        sid: str,
        events: list[tuple[str, dict[str, Any]]],
        *,
        idem: str = "",
        op: str = "none",
        turn: str = "",
        counters: str = "",
    ) -> list[str]:
        bodies = [json.dumps({"type": t, "data": d}, separators=(",", ":")) for t, d in events]
        res = await self._append(
            keys=self.keys(sid), args=[10_000, sid, idem, op, turn, counters, *bodies]
        )
        assert res[0] == "ok", res
        return [str(i) for i in res[3:]]

    async def bookmark(self, sid: str, name: str) -> None:
        partial = json.dumps({"name": name, "description": ""})
        res = await self._bookmark(keys=self.keys(sid), args=[10_000, sid, name, partial])
        assert res[0] == "ok", res
