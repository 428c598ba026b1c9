-- wrk script: each request asks for a random key among the first N items
-- written by bench/cmd/populate (URL /cNN/item-NNNNNNN, N given after --).
local n = 1000
function init(args)
  n = tonumber(args[1]) or 1000
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end
function request()
  local i = math.random(0, n - 1)
  return wrk.format("GET", string.format("/c%02d/item-%07d", i % 20, i))
end
