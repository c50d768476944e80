-- Re-deliver a dead-lettered entry: append its payload to its original stream as a new entry and delete its
-- dead letter(s), in one atomic step, so a crash leaves either both or neither. Nothing happens unless every
-- dead letter is still there (a concurrent retry or purge got there first): the entry is re-added at most once.
-- split() comes from prelude.lua.
--
-- KEYS[1]  the original stream (receives the payload, field `data`)
-- KEYS[2]  the dead-letter stream
-- ARGV[1]  the original payload
-- ARGV[2]  ids of the dead letters to delete, joined by "\n"
-- Returns the new entry's id, or false (and writes nothing) when a dead letter is gone.

local ids = split(ARGV[2])
for _, id in ipairs(ids) do
    if #redis.call('XRANGE', KEYS[2], id, id) == 0 then
        return false
    end
end
local new_id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
redis.call('XDEL', KEYS[2], unpack(ids))
return new_id
