--[[
  Add jobs, many per call (one call per bulk).

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] number of jobs, n
  then 7 values per job, from ARGV[3]:
    id ("" = take the next from the id counter), name, data (JSON), opts (JSON),
    delay in ms, priority (0 = none), lifo ("1" or "0")

  Returns one {jobId, duplicated} pair per job; duplicated = 1 when a job with
  that custom id already existed (nothing is written for it).
  Events: added, then waiting or delayed; duplicated.
]]
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local now = nowMs()
local results = {}
local anyReady = false
local anyDelayed = false
-- FIFO ids are pushed together at the end: one LPUSH of many keeps the same
-- order as one LPUSH each.
local fifo = {}

local function storeOne(jobId, base)
  local delay = tonumber(ARGV[base + 4])
  local priority = tonumber(ARGV[base + 5])
  rcall("HSET", prefix .. jobId, "name", ARGV[base + 1], "data", ARGV[base + 2],
        "opts", ARGV[base + 3], "timestamp", now, "delay", delay, "priority", priority)
  rcall("XADD", KEYS[7], "*", "event", "added", "jobId", jobId, "name", ARGV[base + 1])
  if delay > 0 then
    pushDelayed(jobId, now + delay)
    rcall("XADD", KEYS[7], "*", "event", "delayed", "jobId", jobId, "delay", now + delay)
    anyDelayed = true
  else
    if priority == 0 and ARGV[base + 6] ~= "1" then
      fifo[#fifo + 1] = jobId
    else
      pushReady(jobId, priority, ARGV[base + 6] == "1")
    end
    rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId)
    anyReady = true
  end
end

-- Generated ids come from one INCRBY; they can't collide with custom ids,
-- which may not be bare integers.
local generated = 0
for i = 0, n - 1 do
  if ARGV[3 + i * 7] == "" then
    generated = generated + 1
  end
end
local nextId = 0
if generated > 0 then
  nextId = rcall("INCRBY", KEYS[11], generated) - generated
end

for i = 0, n - 1 do
  local base = 3 + i * 7
  local jobId = ARGV[base]
  if jobId == "" then
    nextId = nextId + 1
    jobId = tostring(nextId)
    storeOne(jobId, base)
    results[#results + 1] = {jobId, 0}
  elseif rcall("EXISTS", prefix .. jobId) == 1 then
    rcall("XADD", KEYS[7], "*", "event", "duplicated", "jobId", jobId)
    results[#results + 1] = {jobId, 1}
  else
    storeOne(jobId, base)
    results[#results + 1] = {jobId, 0}
  end
end

for i = 1, #fifo, 5000 do
  rcall("LPUSH", KEYS[1], unpack(fifo, i, math.min(i + 4999, #fifo)))
end
if anyReady then
  markReady(KEYS[9], KEYS[8])
end
if anyDelayed then
  markDelayed(KEYS[9], KEYS[4])
end
trimEvents(KEYS[8], KEYS[7])
return results
