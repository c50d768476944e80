-- Finish a consumer's batch in one atomic step (DESIGN §3 rules 2 and 3): ack the inputs, append what they
-- produced, and move poison to the dead-letter stream. An input's outputs and dead letter are written only
-- if this call's XACK removed it from the group's pending list, so a retried call (reply lost) or a second
-- consumer that processed the same claimed entry adds nothing: no output is ever written twice.
-- split() comes from prelude.lua. Lists travel as one argument each, items joined by "\n" (ids and compact JSON never contain a newline).
--
-- KEYS[1]  input stream
-- KEYS[2]  output stream (unused when no entry has outputs)
-- KEYS[3]  dead-letter stream
-- KEYS[4]  failures hash of this stream and group (last error per entry id)
-- ARGV[1]  group name
-- ARGV[2]  ids to ack, joined by "\n"
-- ARGV[3]  number of outputs of each of those ids, joined by "\n"
-- ARGV[4]  all outputs in id order, joined by "\n"
-- ARGV[5]  ids to dead-letter, joined by "\n"
-- ARGV[6]  their dead-letter payloads, joined by "\n"
-- Returns {acked, emitted, dead_lettered}.

local group = ARGV[1]
local has_failures = redis.call('EXISTS', KEYS[4]) == 1
local acked, emitted, dead = 0, 0, 0

local ids, counts, outputs = split(ARGV[2]), split(ARGV[3]), split(ARGV[4])
if #outputs == 0 then
    -- nothing to emit (the writer's case): one XACK per thousand ids instead of one per id
    for first = 1, #ids, 1000 do
        acked = acked + redis.call('XACK', KEYS[1], group, unpack(ids, first, math.min(first + 999, #ids)))
    end
    if has_failures then
        for _, id in ipairs(ids) do
            redis.call('HDEL', KEYS[4], id)
        end
    end
    ids = {}
end
-- One XACK per id: its reply says whether this call removed that input. (Measured against one variadic XCLAIM
-- ... JUSTID per thousand ids to learn which are pending: with AOF on, Redis propagates XCLAIM once per id, and
-- the script cost more CPU in all, not less.)
local next_output = 1
for i, id in ipairs(ids) do
    local k = tonumber(counts[i])
    if redis.call('XACK', KEYS[1], group, id) == 1 then
        acked = acked + 1
        for j = next_output, next_output + k - 1 do
            redis.call('XADD', KEYS[2], '*', 'data', outputs[j])
        end
        emitted = emitted + k
        if has_failures then
            redis.call('HDEL', KEYS[4], id)
        end
    end
    next_output = next_output + k
end

local dead_ids, dead_payloads = split(ARGV[5]), split(ARGV[6])
for i, id in ipairs(dead_ids) do
    if redis.call('XACK', KEYS[1], group, id) == 1 then
        redis.call('XADD', KEYS[3], '*', 'data', dead_payloads[i])
        dead = dead + 1
        if has_failures then
            redis.call('HDEL', KEYS[4], id)
        end
    end
end
return {acked, emitted, dead}
