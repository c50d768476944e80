-- Prepended to every script of this folder (Redis scripts cannot import one another).

-- The lists the scripts receive travel as one argument, items joined by "\n"; this splits them back.
local function split(joined)
    local items, pos = {}, 1
    if joined == '' then
        return items
    end
    while true do
        local newline = string.find(joined, '\n', pos, true)
        if not newline then
            items[#items + 1] = string.sub(joined, pos)
            return items
        end
        items[#items + 1] = string.sub(joined, pos, newline - 1)
        pos = newline + 1
    end
end

