--[[
  Remove a job scheduler and the delayed job of its next run. A job of an earlier
  run that is already waiting or running is left to finish.

  KEYS: the queue's engine keys (see _lib.lua), then, last:
    KEYS[#KEYS - 1] the queue's "repeat" zset
    KEYS[#KEYS]     the scheduler's hash, "repeat:<scheduler id>"
  ARGV[1] job key prefix
  ARGV[2] scheduler id

  Returns 1 when there was such a scheduler (running or finished), else 0.
  Events: removed, for the delayed job.
]]
local prefix = ARGV[1]
local schedulerId = ARGV[2]
local score = rcall("ZSCORE", KEYS[#KEYS - 1], schedulerId)
if score then
  local jobId = "repeat:" .. schedulerId .. ":" .. string.format("%.0f", tonumber(score))
  if rcall("ZREM", KEYS[4], jobId) == 1 then
    delInSlices(jobKeysOf(prefix, {jobId}))
    rcall("XADD", KEYS[7], "*", "event", "removed", "jobId", jobId, "prev", "delayed")
    trimEvents(KEYS[8], KEYS[7])
  end
end
local existed = rcall("ZREM", KEYS[#KEYS - 1], schedulerId) + rcall("DEL", KEYS[#KEYS])
if existed > 0 then
  return 1
end
return 0
