-- Re-deliver a dead-lettered entry: append its payload to its original stream as a new entry and delete its
-- dead letter(s), in one atomic step, so a crash leaves either both or neither. Nothing happens unless every
-- dead letter is still there (a concurrent retry or purge got there first): the entry is re-added at most once.
--
-- KEYS[1]    the original stream (receives the payload, field `data`)
-- KEYS[2]    the dead-letter stream
-- ARGV[1]    the original payload
-- ARGV[2 ..] ids of the dead letters to delete
-- Returns the new entry's id, or false (and writes nothing) when a dead letter is gone.

for i = 2, #ARGV do
    if #redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i]) == 0 then
        return false
    end
end
local new_id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
call_over_argv('XDEL', {KEYS[2]}, 2, #ARGV)
return new_id
