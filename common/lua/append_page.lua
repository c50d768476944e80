-- Append a page from a source and advance its cursor in one atomic step (DESIGN §3 rule 1).
-- A crash can leave either nothing or everything; a retry of a call whose reply was lost is refused,
-- because the cursor no longer holds the value the caller expects (compare-and-set).
--
-- KEYS[1]              stream that receives the entries (field `data`)
-- KEYS[2]              dead-letter stream that receives the page's malformed items (field `data`)
-- KEYS[3 .. 2+n]       cursor keys, plain strings
-- KEYS[3+n .. ]        hashes updated with the page (e.g. token -> market, market id -> content hash)
-- ARGV[1]  n: number of cursor keys
-- ARGV[2]  m: number of entries
-- ARGV[3]  d: number of dead letters
-- ARGV[4]  h: number of hash writes
-- then     n expected current cursor values ("" = key absent), n new cursor values,
--          m entry payloads, d dead-letter payloads,
--          h triplets: hash index (1 = KEYS[3+n]), field, value
-- Returns m, or -1 (and writes nothing) when a cursor does not hold its expected value.

local n, m, d, h = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local base = 4
for i = 1, n do
    local current = redis.call('GET', KEYS[2 + i]) or ''
    if current ~= ARGV[base + i] then
        return -1
    end
end
for i = 1, n do
    redis.call('SET', KEYS[2 + i], ARGV[base + n + i])
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
    local at = base + 3 * (i - 1)
    redis.call('HSET', KEYS[2 + n + tonumber(ARGV[at + 1])], ARGV[at + 2], ARGV[at + 3])
end
return m
