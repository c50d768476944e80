-- Finish a consumer's batch in one atomic step (DESIGN §3 rules 2 and 3): ack the inputs, append what they
-- produced, and move poison to the dead-letter stream. An input's outputs and dead letter are written only
-- if this call's XACK removed it from the group's pending list, so a retried call (reply lost) or a second
-- consumer that processed the same claimed entry adds nothing: no output is ever written twice.
--
-- KEYS[1]  input stream
-- KEYS[2]  output stream (unused when no entry has outputs)
-- KEYS[3]  dead-letter stream
-- KEYS[4]  failures hash of this stream and group (last error per entry id)
-- ARGV[1]  group name
-- ARGV[2]  a: number of entries to ack; then per entry: id, k, k output payloads
-- then     d: number of dead letters; then per dead letter: id, payload
-- Returns {acked, emitted, dead_lettered}.

local group = ARGV[1]
local has_failures = redis.call('EXISTS', KEYS[4]) == 1
local acked, emitted, dead = 0, 0, 0
local i = 2
local a = tonumber(ARGV[i])
for _ = 1, a do
    local id, k = ARGV[i + 1], tonumber(ARGV[i + 2])
    i = i + 2
    local removed = redis.call('XACK', KEYS[1], group, id)
    if removed == 1 then
        acked = acked + 1
        for j = 1, k do
            redis.call('XADD', KEYS[2], '*', 'data', ARGV[i + j])
        end
        emitted = emitted + k
        if has_failures then
            redis.call('HDEL', KEYS[4], id)
        end
    end
    i = i + k
end
i = i + 1
local d = tonumber(ARGV[i])
for _ = 1, d do
    local id, payload = ARGV[i + 1], ARGV[i + 2]
    i = i + 2
    if redis.call('XACK', KEYS[1], group, id) == 1 then
        redis.call('XADD', KEYS[3], '*', 'data', payload)
        dead = dead + 1
        if has_failures then
            redis.call('HDEL', KEYS[4], id)
        end
    end
end
return {acked, emitted, dead}
