-- Re-deliver a dead letter: append its payload to its original stream as a new entry and delete its dead
-- letter(s), in one atomic step, so a crash leaves either both or neither. Nothing happens unless every dead letter
-- is still there (a concurrent retry or purge got there first): the payload is re-added at most once.
-- split() comes from prelude.lua.
--
-- KEYS[1]  the original stream (receives the payload, field `data`)
-- KEYS[2]  the dead-letter stream
-- KEYS[3]  stream:items, the items appended per stream
-- ARGV[1]  the payload: a page (common/pages.py)
-- ARGV[2]  ids of the dead letters to delete, joined by "\n"
-- ARGV[3]  how many items the payload holds
-- Returns the new entry's id, or false (and writes nothing) when a dead letter is gone.

local ids = split(ARGV[2])
for _, id in ipairs(ids) do
    if #redis.call('XRANGE', KEYS[2], id, id) == 0 then
        return false
    end
end
local new_id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
redis.call('HINCRBY', KEYS[3], KEYS[1], tonumber(ARGV[3]))
redis.call('XDEL', KEYS[2], unpack(ids))
return new_id
