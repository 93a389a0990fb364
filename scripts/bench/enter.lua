-- wrk script: every request enters a distinct ticket <VENUE>-T<thread>-<n>, as
-- scripts/bench/wrk-enter.sh loads them. Venue, device and gate ids come from
-- the environment (VENUE, DEVICE_ID, GATE_ID), the key from API_KEY.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  device_id = os.getenv("DEVICE_ID")
  gate_id = os.getenv("GATE_ID")
  api_key = os.getenv("API_KEY")
  scan_time = os.getenv("SCAN_TIME")
  venue = os.getenv("VENUE")
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"deviceOs":"Printed","gateName":"Bench Gate","token":"%s-T%d-%d","venueId":"%s","deviceId":%s,"gateId":%s,"scanTime":%s}',
    venue, thread_id, counter, venue, device_id, gate_id, scan_time)
  return wrk.format("POST", "/presence/v1/ticket/enter", {["X-Api-Key"] = api_key, ["Content-Type"] = "application/json"}, body)
end

statuses = {}
function response(status, headers, body)
  local s = string.match(body, '"status":"([A-Z_]+)"') or tostring(status)
  statuses[s] = (statuses[s] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    io.write(string.format("%s: %d\n", status, count))
  end
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
