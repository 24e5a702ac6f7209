--[[
  The stalled check: return the jobs of dead workers to the queue. At most one
  run per interval, whichever worker comes first.

  An id that was in "active" at the previous check (so in "stalled" now) and
  has no lock any more belongs to a worker that stopped renewing it: it goes
  back to wait, or fails once it has stalled more than the allowed times.
  Then every id now active is marked for the next check.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] maximum stalls before a job fails
  ARGV[3] check interval, ms (the lifetime of "stalled-check")

  It also removes, a batch at a time, the staged jobs of a large flow whose producer
  died before committing it (staged over an hour ago; see flow_stage.lua).

  Returns {recovered ids, failed ids}, or false when another check ran recently.
  Events: stalled, waiting, failed.
]]
local prefix = ARGV[1]
local maxStalled = tonumber(ARGV[2])
if rcall("SET", KEYS[14], "1", "PX", ARGV[3], "NX") == false then
  return false
end
local now = nowMs()
local recovered = {}
local failed = {}

-- Fail it as a worker would: keep it by removeOnFail, and tell its parent.
local function failStalled(jobId, jobKey)
  local reason = "job stalled more than allowable limit"
  local fields = rcall("HMGET", jobKey, "opts", "parentKey")
  local opts = cjson.decode(fields[1] or "{}")
  rcall("HSET", jobKey, "failedReason", reason, "finishedOn", now)
  rcall("XADD", KEYS[7], "*", "event", "failed", "jobId", jobId,
        "failedReason", reason, "prev", "active")
  if fields[2] then
    childFailed(fields[2], jobKey, reason, policyOf(fields[1]), 0, now)
  end
  settleFailed(prefix, jobId, opts["removeOnFail"], now)
  failed[#failed + 1] = jobId
end

local function recover(jobId)
  local jobKey = prefix .. jobId
  if rcall("EXISTS", jobKey .. ":lock") == 1 then
    return
  end
  if rcall("LREM", KEYS[2], 1, jobId) == 0 then
    return
  end
  local stalls = rcall("HINCRBY", jobKey, "stc", 1)
  if stalls > maxStalled then
    failStalled(jobId, jobKey)
    return
  end
  rcall("XADD", KEYS[7], "*", "event", "stalled", "jobId", jobId)
  -- RPUSH: a recovered job was due long ago, so it is taken next.
  local priority = tonumber(rcall("HGET", jobKey, "priority")) or 0
  pushReady(jobId, priority, true)
  rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId, "prev", "active")
  recovered[#recovered + 1] = jobId
end

for _, jobId in ipairs(rcall("SMEMBERS", KEYS[12])) do
  recover(jobId)
end
rcall("DEL", KEYS[12])
local active = rcall("LRANGE", KEYS[2], 0, -1)
for i = 1, #active, 5000 do
  rcall("SADD", KEYS[12], unpack(active, i, math.min(i + 4999, #active)))
end
if #recovered > 0 then
  markReady(KEYS[9], KEYS[8])
end
-- Flows whose producer died while staging them: remove a batch per check.
local abandoned = rcall("ZRANGEBYSCORE", prefix .. "flows-staging", 0, now - 3600000,
                        "LIMIT", 0, 1)
if abandoned[1] then
  discardStaged(prefix, abandoned[1], 500)
end
return {recovered, failed}
