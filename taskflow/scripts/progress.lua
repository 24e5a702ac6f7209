--[[
  Set a job's progress and tell listeners.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] job id
  ARGV[3] progress, JSON

  Returns 1, or 0 when the job no longer exists.
  Events: progress.
]]
local jobKey = ARGV[1] .. ARGV[2]
if rcall("EXISTS", jobKey) == 0 then
  return 0
end
rcall("HSET", jobKey, "progress", ARGV[3])
rcall("XADD", KEYS[7], "MAXLEN", "~", maxEvents(KEYS[8]), "*", "event", "progress",
      "jobId", ARGV[2], "data", ARGV[3])
return 1
