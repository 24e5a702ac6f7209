--[[
  Remove one job, whatever its state, unless a worker holds its lock; with
  children, remove its pending children too (depth-first, bounded).

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] job id
  ARGV[3] "1" to remove the job's pending children as well

  Returns 1 removed, 0 no such job, -1 locked (running).
  Events: removed.
]]
local removeChildren = ARGV[3] == "1"

local function unlinkFromQueue(queueKey, jobId)
  rcall("LREM", queueKey .. ":wait", 0, jobId)
  rcall("LREM", queueKey .. ":active", 0, jobId)
  for _, suffix in ipairs({"prioritized", "delayed", "completed", "failed",
                           "waiting-children"}) do
    rcall("ZREM", queueKey .. ":" .. suffix, jobId)
  end
end

local function removeOne(jobKey, depth)
  if rcall("EXISTS", jobKey) == 0 then
    return 0
  end
  if rcall("EXISTS", jobKey .. ":lock") == 1 then
    return -1
  end
  if removeChildren and depth < 32 then
    for _, childKey in ipairs(rcall("SMEMBERS", jobKey .. ":dependencies")) do
      removeOne(childKey, depth + 1)
    end
  end
  local queueKey, jobId = string.match(jobKey, "^(.*):([^:]+)$")
  local parentKey = rcall("HGET", jobKey, "parentKey")
  if parentKey then
    rcall("SREM", parentKey .. ":dependencies", jobKey)
  end
  unlinkFromQueue(queueKey, jobId)
  rcall("DEL", jobKey, jobKey .. ":logs", jobKey .. ":dependencies", jobKey .. ":processed",
        jobKey .. ":failed", jobKey .. ":unsuccessful", jobKey .. ":lock")
  rcall("XADD", queueKey .. ":events", "*", "event", "removed", "jobId", jobId)
  return 1
end

return removeOne(ARGV[1] .. ARGV[2], 0)
