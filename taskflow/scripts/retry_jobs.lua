--[[
  Send failed (or completed) jobs back to wait, a bounded batch per call, with their
  attempts counted afresh.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] "failed" or "completed"
  ARGV[3] batch size
  ARGV[4] one job id ("" = the oldest ARGV[3] jobs of the set)

  Returns the number of jobs moved.
  Events: waiting (prev failed / completed).
]]
local prefix = ARGV[1]
local setKey = KEYS[6]
if ARGV[2] == "completed" then
  setKey = KEYS[5]
end
local ids
if ARGV[4] ~= "" then
  ids = {}
  if rcall("ZREM", setKey, ARGV[4]) == 1 then
    ids[1] = ARGV[4]
  end
else
  ids = rcall("ZRANGE", setKey, 0, tonumber(ARGV[3]) - 1)
  if #ids > 0 then
    rcall("ZREM", setKey, unpack(ids))
  end
end
for _, jobId in ipairs(ids) do
  local jobKey = prefix .. jobId
  rcall("HDEL", jobKey, "finishedOn", "processedOn", "failedReason", "returnvalue", "defa")
  rcall("HSET", jobKey, "atm", 0, "stc", 0)
  pushReady(jobId, tonumber(rcall("HGET", jobKey, "priority")) or 0, false)
  rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId, "prev", ARGV[2])
end
if #ids > 0 then
  markReady(KEYS[9], KEYS[8])
  trimEvents(KEYS[8], KEYS[7])
end
return #ids
