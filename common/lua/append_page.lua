-- Append a page from a source and advance its cursor in one atomic step (DESIGN §3 rule 1).
-- A crash can leave either nothing or everything; a retry of a call whose reply was lost is refused,
-- because the cursor no longer holds the value the caller expects (compare-and-set).
--
-- KEYS[1]      stream that receives the entries (field `data`)
-- KEYS[2]      dead-letter stream that receives the page's malformed items (field `data`)
-- KEYS[3]      hash that receives field/value pairs written with the page (e.g. token -> market), or unused
-- KEYS[4..]    cursor keys, plain strings
-- ARGV[1]      n: number of cursor keys
-- ARGV[2]      m: number of entries
-- ARGV[3]      d: number of dead letters
-- ARGV[4]      h: number of hash field/value pairs
-- ARGV[5 .. 4+n]           expected current value of each cursor ("" = key absent)
-- ARGV[5+n .. 4+2n]        new value of each cursor
-- ARGV[5+2n .. 4+2n+m]     entry payloads
-- ARGV[5+2n+m .. +d]       dead-letter payloads
-- ARGV[.. +2h]             hash field, value, field, value, ...
-- Returns m, or -1 (and writes nothing) when a cursor does not hold its expected value.

local n, m, d, h = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local base = 4
for i = 1, n do
    local current = redis.call('GET', KEYS[3 + i]) or ''
    if current ~= ARGV[base + i] then
        return -1
    end
end
for i = 1, n do
    redis.call('SET', KEYS[3 + i], ARGV[base + n + i])
end
base = base + 2 * n
for i = 1, m do
    redis.call('XADD', KEYS[1], '*', 'data', ARGV[base + i])
end
base = base + m
for i = 1, d do
    redis.call('XADD', KEYS[2], '*', 'data', ARGV[base + i])
end
base = base + d
for i = 1, h do
    redis.call('HSET', KEYS[3], ARGV[base + 2 * i - 1], ARGV[base + 2 * i])
end
return m
