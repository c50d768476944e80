-- Append a page from a source and advance its cursor in one atomic step (DESIGN §3 rule 1).
-- A crash can leave either nothing or everything; a retry of a call whose reply was lost is refused,
-- because the cursor no longer holds the value the caller expects (compare-and-set).
-- Lists travel as ARGV elements, one per item; call_over_argv() comes from prelude.lua.
--
-- KEYS[1]            stream that receives the entries (field `data`)
-- KEYS[2]            dead-letter stream that receives the page's malformed items (field `data`)
-- KEYS[3 .. 2+n]     cursor keys, plain strings
-- KEYS[3+n .. ]      hashes updated with the page (e.g. token -> market, market id -> content hash)
-- ARGV[1]            n: number of cursor keys
-- ARGV[2 .. 1+n]     expected current value of each cursor ("" = key absent)
-- ARGV[2+n .. 1+2n]  new value of each cursor
-- ARGV[2+2n]         e: number of entries
-- ARGV[3+2n]         d: number of dead letters
-- ARGV[4+2n]         h: number of hash keys
-- then               h counts (items of each hash: field, value, field, value, ...); e entry payloads;
--                    d dead-letter payloads; the hashes' items, hash by hash
-- Returns the number of entries appended, or -1 (and writes nothing) when a cursor does not hold its
-- expected value.

local n = tonumber(ARGV[1])
for i = 1, n do
    if (redis.call('GET', KEYS[2 + i]) or '') ~= ARGV[1 + i] then
        return -1
    end
end
for i = 1, n do
    redis.call('SET', KEYS[2 + i], ARGV[1 + n + i])
end
local e, d, h = tonumber(ARGV[2 + 2 * n]), tonumber(ARGV[3 + 2 * n]), tonumber(ARGV[4 + 2 * n])
local entries_at = 5 + 2 * n + h
for j = entries_at, entries_at + e - 1 do
    redis.call('XADD', KEYS[1], '*', 'data', ARGV[j])
end
for j = entries_at + e, entries_at + e + d - 1 do
    redis.call('XADD', KEYS[2], '*', 'data', ARGV[j])
end
local items_at = entries_at + e + d
for k = 1, h do
    local count = tonumber(ARGV[4 + 2 * n + k])
    -- an even chunk size keeps each field with its value
    call_over_argv('HSET', {KEYS[2 + n + k]}, items_at, items_at + count - 1)
    items_at = items_at + count
end
return e
