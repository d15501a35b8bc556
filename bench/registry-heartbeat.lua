-- Heartbeats from 10,000 registered instances (BENCH-0 .. BENCH-99, 100 instances each), each
-- wrk connection cycling through its own share of them.
local counter = 0
local offset = 0
function setup(thread)
  thread:set("offset", offset)
  offset = offset + 5000
end
function request()
  counter = counter + 1
  local n = (offset + counter) % 10000
  local app = math.floor(n / 100)
  return wrk.format("PUT", "/eureka/apps/BENCH-" .. app .. "/i-" .. n .. "?status=UP")
end
