-- A write that changes nothing, for WAIT to cover: sets a remembered decision's
-- expiry again to what it is now, so that a retry answered from memory waits
-- for the replicas as its own commit would have, without lengthening the
-- decision's life (a NOT_FOUND retried on and on must still be forgotten).
-- Redis replicates the script's effect, the PEXPIRE, and the WAIT that follows
-- on the same connection covers every write before it.
--
-- KEYS[1]  the scan's remembered decision   <prefix>{t:<token>}:sc:<kind>:<device>:<scan time>
--
-- Returns the expiry left, in milliseconds (negative: no such key, or none set).
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
  redis.call('PEXPIRE', KEYS[1], left)
end
return left
