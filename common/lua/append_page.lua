-- Append a page from a source and advance its cursor in one atomic step (docs/CONTRACT.md §3 rule 1).
-- A crash can leave either nothing or everything; a retry of a call whose reply was lost is refused,
-- because the cursor no longer holds the value the caller expects (compare-and-set).
-- split() and xadd_each() come from prelude.lua. Lists travel as one argument each, items joined by "\n" (compact
-- JSON never contains a raw newline): one big argument costs the client far less to send than many small ones.
--
-- KEYS[1]            stream that receives the entries (field `data`: a page, common/pages.py)
-- KEYS[2]            dead-letter stream that receives the page's malformed items (field `data`)
-- KEYS[3]            stream:items, the items appended per stream
-- KEYS[4 .. 3+n]     cursor keys, plain strings
-- KEYS[4+n .. ]      hashes updated with the page (e.g. token -> market, market id -> content hash)
-- ARGV[1]            n: number of cursor keys
-- ARGV[2 .. 1+n]     expected current value of each cursor ("" = key absent)
-- ARGV[2+n .. 1+2n]  new value of each cursor
-- ARGV[2+2n]         entry payloads (pages), joined by "\n"
-- ARGV[3+2n]         how many items those pages hold in all
-- ARGV[4+2n]         dead-letter payloads, joined by "\n"
-- ARGV[5+2n ..]      one per hash key: field, value, field, value, ... joined by "\n"
-- Returns the number of entries appended, or -1 (and writes nothing) when a cursor does not hold its
-- expected value.

local n = tonumber(ARGV[1])
for i = 1, n do
    if (redis.call('GET', KEYS[3 + i]) or '') ~= ARGV[1 + i] then
        return -1
    end
end
for i = 1, n do
    redis.call('SET', KEYS[3 + i], ARGV[1 + n + i])
end
local appended = xadd_each(KEYS[1], ARGV[2 + 2 * n])
local items = tonumber(ARGV[3 + 2 * n])
if items > 0 then
    redis.call('HINCRBY', KEYS[3], KEYS[1], items)
end
local dead = xadd_each(KEYS[2], ARGV[4 + 2 * n])
if dead > 0 then
    redis.call('HINCRBY', KEYS[3], KEYS[2], dead)
end
for h = 1, #KEYS - 3 - n do
    local pairs_ = split(ARGV[4 + 2 * n + h])
    for first = 1, #pairs_, 1000 do  -- variadic, 500 pairs a call (unpack's stack limit); a later pair still wins
        redis.call('HSET', KEYS[3 + n + h], unpack(pairs_, first, math.min(first + 999, #pairs_)))
    end
end
return appended
