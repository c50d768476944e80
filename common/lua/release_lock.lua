-- Release a table's insert lock only if the caller still holds it (compare-and-delete): a lock that expired and
-- was taken by another owner is left alone.
--
-- KEYS[1]  the lock (lock:insert:<table>)
-- ARGV[1]  owner name
-- Returns 1 when the lock was released, 0 when the caller did not hold it.

if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
