-- Prepended to every script of this folder (Redis scripts cannot import one another).

-- Lists travel as ARGV elements, one per item (no joining or splitting, no copy of a payload in Lua).
-- A variadic command over ARGV[first .. last] goes out in chunks: unpack() can pass only so many values at once.
local CHUNK = 1000

-- redis.call(command, head..., ARGV[i .. j], tail...) for consecutive chunks of first .. last; returns the replies.
local function call_over_argv(command, head, first, last, tail)
    local replies = {}
    for i = first, last, CHUNK do
        local args = {unpack(head)}
        for j = i, math.min(i + CHUNK - 1, last) do
            args[#args + 1] = ARGV[j]
        end
        for _, arg in ipairs(tail or {}) do
            args[#args + 1] = arg
        end
        replies[#replies + 1] = redis.call(command, unpack(args))
    end
    return replies
end
