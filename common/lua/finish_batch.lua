-- Finish a consumer's batch in one atomic step (docs/CONTRACT.md §3 rules 2 and 3): ack the entries, append what
-- they produced, dead-letter their poison items and re-append the items that must wait. What an entry produces is
-- written only if this call's ack removed the entry from the group's pending list, so a retried call (reply lost)
-- or a second consumer that processed the same claimed entry adds nothing: nothing is ever written twice.
-- split() comes from prelude.lua. Lists travel as one argument each, items joined by "\n" (ids, numbers and
-- compact JSON never contain a newline).
--
-- KEYS[1]  input stream (also receives the re-appended entries)
-- KEYS[2]  output stream (unused when no entry has outputs)
-- KEYS[3]  dead-letter stream
-- KEYS[4]  failures hash of this stream and group (last error per entry id)
-- KEYS[5]  stream:items, the items appended per stream (items appended again are not new: not counted)
-- ARGV[1]  group name
-- ARGV[2]  consumer name: of the caller, whose pending entries these are
-- ARGV[3]  ids to ack, joined by "\n"
-- ARGV[4]  per id, "outputs,dead letters,re-appended entries" (e.g. "1,0,0"), joined by "\n"; "" when no id has
--          any (the writer's usual batch: nothing but acks)
-- ARGV[5]  all outputs (pages) in id order, joined by "\n"; ARGV[6] how many items each holds
-- ARGV[7]  all dead letters in id order, joined by "\n" (one item each, or a whole entry)
-- ARGV[8]  all re-appended entries (pages) in id order, joined by "\n"; ARGV[9] how many items each holds;
--          ARGV[10] each one's `since` field (unix ms: when its items first arrived, kept across re-appends)
-- Returns {entries acked, items emitted, dead letters written, items re-appended}.

local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local has_failures = redis.call('EXISTS', KEYS[4]) == 1

-- Variadic XACK and HDEL, a thousand ids a call (unpack's stack limit); returns how many were pending.
local function ack_all(ids)
    local removed = 0
    for first = 1, #ids, 1000 do
        local last = math.min(first + 999, #ids)
        removed = removed + redis.call('XACK', stream, group, unpack(ids, first, last))
        if has_failures then
            redis.call('HDEL', KEYS[4], unpack(ids, first, last))
        end
    end
    return removed
end

local ids = split(ARGV[3])
if ARGV[4] == '' then
    -- nothing to write: whether an id was still pending changes nothing
    return {ack_all(ids), 0, 0, 0}
end

-- Which of the ids are still pending for this consumer: XPENDING over their id range (read-only, so not
-- propagated to the AOF). An id claimed away by another consumer is not ours any more: that consumer writes what
-- it produces. Everything found here is acked below, in this same script, so "pending for us now" is exactly
-- "removed by this call".
local function id_key(id)  -- ms and sequence as numbers (exact below 2^53; a wrong bound only leaves an id pending)
    local dash = string.find(id, '-', 1, true)
    return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local low_ms, low_seq, high_ms, high_seq
for _, id in ipairs(ids) do
    local ms, seq = id_key(id)
    if low_ms == nil or ms < low_ms or (ms == low_ms and seq < low_seq) then
        low_ms, low_seq = ms, seq
    end
    if high_ms == nil or ms > high_ms or (ms == high_ms and seq > high_seq) then
        high_ms, high_seq = ms, seq
    end
end
local pending = {}
if low_ms ~= nil then
    local low, high = string.format('%d-%d', low_ms, low_seq), string.format('%d-%d', high_ms, high_seq)
    while true do  -- pages: the range may also hold our other pending entries (held fills, the next batch)
        local reply = redis.call('XPENDING', stream, group, low, high, #ids, consumer)
        for _, item in ipairs(reply) do
            pending[item[1]] = true
        end
        if #reply < #ids then
            break
        end
        low = '(' .. reply[#reply][1]
    end
end

-- The entries still ours, and where their writes start in each list. They are acked first: once a script has
-- written, Redis lets it finish even past maxmemory, so a batch in hand is finished, never half-written, when
-- Redis runs out of memory (an XADD first would be refused).
local counts = split(ARGV[4])
local to_ack, ours, next_output, next_dead, next_requeued = {}, {}, 1, 1, 1
for i, id in ipairs(ids) do
    local o, d, r = string.match(counts[i], '^(%d+),(%d+),(%d+)$')
    o, d, r = tonumber(o), tonumber(d), tonumber(r)
    if pending[id] then
        pending[id] = nil  -- an id listed twice counts once
        to_ack[#to_ack + 1] = id
        ours[#ours + 1] = {next_output, o, next_dead, d, next_requeued, r}
    end
    next_output, next_dead, next_requeued = next_output + o, next_dead + d, next_requeued + r
end
local acked = ack_all(to_ack)

local outputs, output_items = split(ARGV[5]), split(ARGV[6])
local dead, requeued, requeued_items, since = split(ARGV[7]), split(ARGV[8]), split(ARGV[9]), split(ARGV[10])
local emitted, dead_written, requeued_written = 0, 0, 0
for _, at in ipairs(ours) do
    for j = at[1], at[1] + at[2] - 1 do
        redis.call('XADD', KEYS[2], '*', 'data', outputs[j])
        emitted = emitted + tonumber(output_items[j])
    end
    for j = at[3], at[3] + at[4] - 1 do
        redis.call('XADD', KEYS[3], '*', 'data', dead[j])
    end
    dead_written = dead_written + at[4]
    for j = at[5], at[5] + at[6] - 1 do
        redis.call('XADD', stream, '*', 'data', requeued[j], 'since', since[j])
        requeued_written = requeued_written + tonumber(requeued_items[j])
    end
end
if emitted > 0 then
    redis.call('HINCRBY', KEYS[5], KEYS[2], emitted)
end
if dead_written > 0 then
    redis.call('HINCRBY', KEYS[5], KEYS[3], dead_written)
end
return {acked, emitted, dead_written, requeued_written}
