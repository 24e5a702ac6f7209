--[[
  Remove jobs from one state, a bounded batch per call: drain (wait, prioritized,
  optionally delayed), clean (finished jobs older than a cutoff), and each step of
  obliterate. The caller repeats the call until it returns fewer than the batch, so
  no single call blocks the server for long.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] where: "wait", "prioritized", "delayed", "completed", "failed",
          "waiting-children" or "active" (obliterate --force only)
  ARGV[3] batch size
  ARGV[4] cutoff, ms: zsets only; remove members scored at or below it ("" = any)
  ARGV[5] event to append with the count removed ("" = none)

  Returns the number of jobs removed.
  Events: ARGV[5] (e.g. cleaned) with count.
]]
local prefix = ARGV[1]
local where = ARGV[2]
local batch = tonumber(ARGV[3])
local lists = {wait = KEYS[1], active = KEYS[2]}
local zsets = {prioritized = KEYS[3], delayed = KEYS[4], completed = KEYS[5],
               failed = KEYS[6], ["waiting-children"] = KEYS[13]}

local function fromList(key)
  local ids = rcall("LRANGE", key, -batch, -1)
  if #ids > 0 then
    rcall("LTRIM", key, 0, -#ids - 1)
  end
  return ids
end

local function fromZset(key)
  local high = "+inf"
  if ARGV[4] ~= "" then
    high = ARGV[4]
  end
  local ids = rcall("ZRANGEBYSCORE", key, "-inf", high, "LIMIT", 0, batch)
  if #ids > 0 then
    rcall("ZREM", key, unpack(ids))
  end
  return ids
end

-- A removed child no longer holds its parent back.
local function releaseFromParent(jobId)
  local parentKey = rcall("HGET", prefix .. jobId, "parentKey")
  if parentKey then
    rcall("SREM", parentKey .. ":dependencies", prefix .. jobId)
  end
end

local ids
if lists[where] then
  ids = fromList(lists[where])
else
  ids = fromZset(zsets[where])
end
for _, jobId in ipairs(ids) do
  releaseFromParent(jobId)
end
delInSlices(jobKeysOf(prefix, ids))
if #ids > 0 and ARGV[5] ~= "" then
  rcall("XADD", KEYS[7], "MAXLEN", "~", maxEvents(KEYS[8]), "*", "event", ARGV[5],
        "count", #ids)
end
return #ids
