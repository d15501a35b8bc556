-- wrk script: PATCH /todo/{id} on the ids 1..100 in turn, flipping nothing but `updated` (the
-- body sets the status the item already has), so every request is a real one-row write.
-- Used by bench/todo-api.sh.
local id = 0
request = function()
  id = id % 100 + 1
  return wrk.format("PATCH", "/todo/" .. id, {["Content-Type"] = "application/json"},
    '{"status":"PROGRESS"}')
end
