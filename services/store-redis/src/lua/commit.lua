-- TicketStore::commit: remember one scan's decision and change its token's state,
-- atomically, if nobody decided this scan or changed the token since it was read.
-- Every key belongs to one token and carries its hash tag, so they share a slot.
-- The rules that computed the decision stay in Rust; this only compares and sets.
--
-- KEYS[1]  the scan's remembered decision   <prefix>{t:<token>}:sc:<kind>:<device>:<scan time>
-- KEYS[2]  the token's state                <prefix>{t:<token>}:st
--          (JSON whose field "v" is the state version; absent means version 0)
-- KEYS[3]  the token's history (a list)     <prefix>{t:<token>}:h
-- ARGV[1]  the state version the decision was computed from
-- ARGV[2]  the decision to remember (JSON)
-- ARGV[3]  how long to remember it, in milliseconds
-- ARGV[4]  the last moment this may run, in Unix milliseconds: its sender stops
--          waiting for the answer then, and must be able to read afterwards
--          whether the commit happened, so it must not happen later
-- ARGV[5]  the token's new state (JSON) when the decision changes it, else ''
-- ARGV[6]  the scan's history record (JSON) to put first in KEYS[3], or ''
-- ARGV[7]  how many history records to keep; the list lives as long as ARGV[3]
--
-- Returns -1 (nothing read or written) if Redis runs it after ARGV[4]; else the
-- remembered decision (a string) if the scan was already decided, 0 if the
-- token's version is not ARGV[1], 1 once written; an error whose code is
-- CORRUPT if the stored state has no version.

local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[4]) then
    return -1
end

local first = redis.call('GET', KEYS[1])
if first then
    return first
end

local version = 0
local current = redis.call('GET', KEYS[2])
if current then
    local ok, state = pcall(cjson.decode, current)
    if not ok or type(state) ~= 'table' or type(state.v) ~= 'number' then
        return redis.error_reply('CORRUPT the token state has no version')
    end
    version = state.v
end
if version ~= tonumber(ARGV[1]) then
    return 0
end

if ARGV[5] ~= '' then
    redis.call('SET', KEYS[2], ARGV[5])
end
if ARGV[6] ~= '' then
    redis.call('LPUSH', KEYS[3], ARGV[6])
    redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
