-- Finish a consumer's batch in one atomic step (DESIGN §3 rules 2 and 3): ack the inputs, append what they
-- produced, and move poison to the dead-letter stream. An input's outputs and dead letter are written only
-- if this call's XACK removed it from the group's pending list, so a retried call (reply lost) or a second
-- consumer that processed the same claimed entry adds nothing: no output is ever written twice.
-- Which inputs are still pending comes from one variadic XCLAIM ... JUSTID per thousand ids (it returns exactly
-- the ids in the pending list, in argument order, without touching delivery counters; this call acks them right
-- after), not from one XACK per id (measured: a quarter less script time per fill with one output each). Without
-- outputs, plain variadic XACKs do (a third of XCLAIM's cost). (An input deleted from the stream while pending, which trimming never does,
-- leaves the pending list without outputs: XCLAIM drops it.) call_over_argv() comes from prelude.lua.
--
-- KEYS[1]  input stream
-- KEYS[2]  output stream (unused when no entry has outputs)
-- KEYS[3]  dead-letter stream
-- KEYS[4]  failures hash of this stream and group (last error per entry id)
-- ARGV[1]  group name
-- ARGV[2]  consumer name (the pending entries are claimed to it for the instant before the ack)
-- ARGV[3]  n: number of ids to ack
-- ARGV[4]  d: number of ids to dead-letter
-- ARGV[5]  k: number of outputs of each id when it is the same for all (the processor 1, the writer 0), else -1
-- then     n ids to ack; when k is -1, n counts (outputs of each of those ids); all outputs in id order;
--          d ids to dead-letter; d dead-letter payloads
-- Returns {acked, emitted, dead_lettered}.

local group, consumer = ARGV[1], ARGV[2]
local n, d, k = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ids_at, counts_at = 6, 6 + n
local outputs_at = k == -1 and 6 + 2 * n or 6 + n
local dead_at = #ARGV - 2 * d + 1
local has_failures = redis.call('EXISTS', KEYS[4]) == 1

-- Ack the ids of ARGV[first .. last] that are still pending. Returns how many, and the set of them, or nil
-- when that is all of them (the common case needs no per-id bookkeeping).
local function ack_pending(first, last)
    local chunks, count = call_over_argv('XCLAIM', {KEYS[1], group, consumer, 0}, first, last, {'JUSTID'}), 0
    for _, claimed in ipairs(chunks) do
        if #claimed > 0 then
            redis.call('XACK', KEYS[1], group, unpack(claimed))
            if has_failures then
                redis.call('HDEL', KEYS[4], unpack(claimed))
            end
        end
        count = count + #claimed
    end
    if count == last - first + 1 then
        return count, nil
    end
    local pending = {}
    for _, claimed in ipairs(chunks) do
        for _, id in ipairs(claimed) do
            pending[id] = true
        end
    end
    return count, pending
end

local acked, emitted = 0, 0
if outputs_at == dead_at then
    -- nothing to emit (the writer's case): no need to know which ids were pending, so plain variadic XACKs
    for _, count in ipairs(call_over_argv('XACK', {KEYS[1], group}, ids_at, ids_at + n - 1)) do
        acked = acked + count
    end
    if has_failures then
        call_over_argv('HDEL', {KEYS[4]}, ids_at, ids_at + n - 1)
    end
else
    local acked_set
    acked, acked_set = ack_pending(ids_at, ids_at + n - 1)
    if acked_set == nil then
        -- the common case: every input was ours to finish, so every output goes out, straight from ARGV
        for j = outputs_at, dead_at - 1 do
            redis.call('XADD', KEYS[2], '*', 'data', ARGV[j])
        end
        emitted = dead_at - outputs_at
    else
        local next_output = outputs_at
        for i = 0, n - 1 do
            local count = k == -1 and tonumber(ARGV[counts_at + i]) or k
            if acked_set[ARGV[ids_at + i]] then
                for j = next_output, next_output + count - 1 do
                    redis.call('XADD', KEYS[2], '*', 'data', ARGV[j])
                end
                emitted = emitted + count
            end
            next_output = next_output + count
        end
    end
end

local dead, dead_set = ack_pending(dead_at, dead_at + d - 1)
for i = 0, d - 1 do
    if dead_set == nil or dead_set[ARGV[dead_at + i]] then
        redis.call('XADD', KEYS[3], '*', 'data', ARGV[dead_at + d + i])
    end
end
return {acked, emitted, dead}
