-- Take or extend a table's insert lock (common/unique_insert.py): set it when it is free or already ours.
-- "Ours" is the owner name, the writer's stable consumer name: a writer restarted after a crash takes its own
-- lock back at once (the dedup token fences the dead incarnation's insert, see unique_insert.py), while any
-- other owner waits until the lock expires.
--
-- KEYS[1]  the lock (lock:insert:<table>)
-- ARGV[1]  owner name
-- ARGV[2]  time to live in milliseconds
-- Returns 1 when the caller holds the lock for the next ARGV[2] ms, 0 when another owner holds it.

local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
