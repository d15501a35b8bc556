-- Batches of 100 Zipkin v2 spans (10 traces of 10 spans, 5 services, tags), each request's trace
-- ids unique: the batch is built once per thread, split where the ids' first 8 hex digits go,
-- and joined with the thread's prefix and a per-request counter (unique for 65,536 requests).
local counter = 0
local parts
local prefix

function setup(thread)
  thread:set("thread_id", tostring(thread):sub(-6))
end

function init(args)
  math.randomseed(os.time() + tonumber(thread_id, 16) % 100000)
  prefix = string.format("%04x", math.random(0, 0xffff))
  local now = os.time() * 1000000
  local spans = {}
  for t = 1, 10 do
    local trace = "@@@@" .. string.format("%08x%08x%06x%02x", math.random(0, 0x7fffffff),
      math.random(0, 0x7fffffff), math.random(0, 0xffffff), t)
    for s = 1, 10 do
      local parent = ""
      if s > 1 then parent = string.format('"parentId":"%016x",', s - 1) end
      local kind = (s % 2 == 1) and "SERVER" or "CLIENT"
      spans[#spans + 1] = string.format(
        '{"traceId":"%s","id":"%016x",%s"kind":"%s","name":"get /api/%d","timestamp":%d,' ..
        '"duration":%d,"localEndpoint":{"serviceName":"svc-%d","ipv4":"10.0.9.%d"},' ..
        '"remoteEndpoint":{"serviceName":"svc-%d"},"tags":{"http.method":"GET","http.status_code":"200"}}',
        trace, s, parent, kind, s, now + s * 100, 1000 - s * 50, (s - 1) % 5 + 1, s, s % 5 + 1)
    end
  end
  local body = "[" .. table.concat(spans, ",") .. "]"
  parts = {}
  for piece in (body .. "@@@@"):gmatch("(.-)@@@@") do parts[#parts + 1] = piece end
end

function request()
  counter = counter + 1
  local body = table.concat(parts, string.format("%s%04x", prefix, counter % 0x10000))
  return wrk.format("POST", "/api/v2/spans", {["Content-Type"] = "application/json"}, body)
end
