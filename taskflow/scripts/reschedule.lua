--[[
  Change when or in which order a job that has not started runs: promote a delayed
  job now, give it a new delay, or a new priority.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] job id
  ARGV[3] "promote", "delay" or "priority"
  ARGV[4] the new delay (ms) or priority

  Returns 1 done, 0 no such job, -1 the job is not in a state that allows it
  (promote and delay need a delayed job; priority a waiting or delayed one).
  Events: waiting (promote), delayed (delay).
]]
local prefix = ARGV[1]
local jobId = ARGV[2]
local jobKey = prefix .. jobId
local action = ARGV[3]
if rcall("EXISTS", jobKey) == 0 then
  return 0
end
local isDelayed = rcall("ZSCORE", KEYS[4], jobId) ~= false

local function setOpt(name, value)
  local opts = cjson.decode(rcall("HGET", jobKey, "opts") or "{}")
  opts[name] = value
  rcall("HSET", jobKey, "opts", cjson.encode(opts), name, value)
end

if action == "promote" then
  if not isDelayed then
    return -1
  end
  rcall("ZREM", KEYS[4], jobId)
  rcall("HSET", jobKey, "delay", 0)
  pushReady(jobId, tonumber(rcall("HGET", jobKey, "priority")) or 0, false)
  rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId, "prev", "delayed")
  markReady(KEYS[9], KEYS[8])
  return 1
end

if action == "delay" then
  if not isDelayed then
    return -1
  end
  local delay = tonumber(ARGV[4])
  local due = nowMs() + delay
  rcall("ZREM", KEYS[4], jobId)
  pushDelayed(jobId, due)
  setOpt("delay", delay)
  rcall("XADD", KEYS[7], "*", "event", "delayed", "jobId", jobId, "delay", due)
  markDelayed(KEYS[9], KEYS[4])
  return 1
end

-- priority
local priority = tonumber(ARGV[4])
local inPrioritized = rcall("ZREM", KEYS[3], jobId) == 1
local inWait = (not inPrioritized) and rcall("LREM", KEYS[1], 0, jobId) > 0
if not (inPrioritized or inWait or isDelayed) then
  return -1
end
setOpt("priority", priority)
if inPrioritized or inWait then
  pushReady(jobId, priority, false)
end
return 1
