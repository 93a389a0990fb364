-- StatsStore::record: count one decision into its venue's counters, once per
-- scan id. Every key carries the venue's hash tag, so they share a slot. Which
-- counters a decision bumps is decided in Rust; this only dedupes and adds.
--
-- KEYS[1]  this scan's marker          <prefix>{vs:<venue>}:sn:<scan id>
-- KEYS[2]  the venue's counters (hash) <prefix>{vs:<venue>}:c
-- KEYS[3]  the gates' names (hash)     <prefix>{vs:<venue>}:g
-- KEYS[4]  the latest decision time    <prefix>{vs:<venue>}:u
-- KEYS[5]  the devices' latest scans   <prefix>{vs:<venue>}:d
-- KEYS[6]  the entry's minute (hash)   <prefix>{vs:<venue>}:m:<minute start>
-- ARGV[1]  how long to keep the marker, in milliseconds
-- ARGV[2]  how much to add to each counter: negative for an annulment, which
--          takes its passage back (a counter never goes below 0)
-- ARGV[3]  the gate id;  ARGV[4]  its name
-- ARGV[5]  when the decision was made, Unix milliseconds
-- ARGV[6]  the device id
-- ARGV[7]  when KEYS[6] expires (Unix ms), or '' when the decision is no entry
-- ARGV[8…] the counter fields to add ARGV[2] to
--
-- Returns 0 (nothing written) if this scan id was counted already, else 1.

if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
    return 0
end
-- Adds ARGV[2] to a hash field, never below 0.
local function add(key, field)
    if redis.call('HINCRBY', key, field, ARGV[2]) < 0 then
        redis.call('HSET', key, field, 0)
    end
end

for i = 8, #ARGV do
    add(KEYS[2], ARGV[i])
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
local latest = redis.call('GET', KEYS[4])
if not latest or tonumber(latest) < tonumber(ARGV[5]) then
    redis.call('SET', KEYS[4], ARGV[5])
end
local device = redis.call('HGET', KEYS[5], ARGV[6])
if not device or tonumber(string.match(device, '^%-?%d+')) < tonumber(ARGV[5]) then
    redis.call('HSET', KEYS[5], ARGV[6], ARGV[5] .. ':' .. ARGV[3])
end
if ARGV[7] ~= '' then
    add(KEYS[6], ARGV[3])
    redis.call('PEXPIREAT', KEYS[6], ARGV[7])
end
return 1
