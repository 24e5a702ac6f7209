--[[
  Shared functions, prepended to every script by taskflow.scripts.load().

  Every engine script receives the queue's keys in one fixed order (see
  taskflow/keys.py, QueueKeys.engine):
    KEYS[1] wait           KEYS[2] active          KEYS[3] prioritized
    KEYS[4] delayed        KEYS[5] completed       KEYS[6] failed
    KEYS[7] events         KEYS[8] meta            KEYS[9] marker
    KEYS[10] pc            KEYS[11] id             KEYS[12] stalled
    KEYS[13] waiting-children                      KEYS[14] stalled-check
  and ARGV[1], the prefix of the queue's job keys ("bull:<queue>:").
]]
local rcall = redis.call

-- The server's clock, in ms: due times never depend on a client's clock.
local function nowMs()
  local t = rcall("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function maxEvents(metaKey)
  return tonumber(rcall("HGET", metaKey, "opts.maxLenEvents")) or 10000
end

local function trimEvents(metaKey, eventsKey)
  rcall("XTRIM", eventsKey, "MAXLEN", "~", maxEvents(metaKey))
end

local function isPaused(metaKey)
  return rcall("HEXISTS", metaKey, "paused") == 1
end

local function priorityScore(priority, pcKey)
  local counter = rcall("INCR", pcKey)
  return priority * 0x100000000 + counter % 0x100000000
end

-- A score in the delayed zset: due ms * 4096 plus a sequence that keeps FIFO
-- order among jobs due in the same millisecond.
local function delayedScore(delayedKey, dueMs)
  local low = dueMs * 0x1000
  local high = (dueMs + 1) * 0x1000 - 1
  local last = rcall("ZREVRANGEBYSCORE", delayedKey, high, low, "WITHSCORES", "LIMIT", 0, 1)
  if last[2] then
    return math.min(tonumber(last[2]) + 1, high)
  end
  return low
end

local function nextDelayedMs(delayedKey)
  local first = rcall("ZRANGE", delayedKey, 0, 0, "WITHSCORES")
  if first[2] then
    return math.floor(tonumber(first[2]) / 0x1000)
  end
  return nil
end

-- Tell idle workers a job is ready: a member "0" at score 0.
local function markReady(markerKey, metaKey)
  if not isPaused(metaKey) then
    rcall("ZADD", markerKey, 0, "0")
  end
end

-- Tell idle workers when the next delayed job is due: member "1".
local function markDelayed(markerKey, delayedKey)
  local due = nextDelayedMs(delayedKey)
  if due then
    rcall("ZADD", markerKey, due, "1")
  end
end

-- Put a ready job where workers take it: wait (FIFO, or LIFO at the taking
-- end), or prioritized when it has a priority.
local function pushReady(jobId, priority, lifo)
  if priority > 0 then
    rcall("ZADD", KEYS[3], priorityScore(priority, KEYS[10]), jobId)
  elseif lifo then
    rcall("RPUSH", KEYS[1], jobId)
  else
    rcall("LPUSH", KEYS[1], jobId)
  end
end

local function pushDelayed(jobId, dueMs)
  rcall("ZADD", KEYS[4], delayedScore(KEYS[4], dueMs), jobId)
end

-- Move every delayed job that is due to the ready lists (FIFO, or by priority).
local function promoteDelayed(prefix, now)
  local due = rcall("ZRANGEBYSCORE", KEYS[4], 0, (now + 1) * 0x1000 - 1, "LIMIT", 0, 1000)
  if #due == 0 then
    return 0
  end
  rcall("ZREM", KEYS[4], unpack(due))
  for _, jobId in ipairs(due) do
    local jobKey = prefix .. jobId
    pushReady(jobId, tonumber(rcall("HGET", jobKey, "priority")) or 0, false)
    rcall("HSET", jobKey, "delay", 0)
    rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId, "prev", "delayed")
  end
  return #due
end

-- DEL in slices: unpack() of a very long table overflows Lua's stack.
local function delInSlices(keys)
  for i = 1, #keys, 5000 do
    rcall("DEL", unpack(keys, i, math.min(i + 4999, #keys)))
  end
end

local function jobKeysOf(prefix, ids)
  local keys = {}
  for _, jobId in ipairs(ids) do
    local jobKey = prefix .. jobId
    keys[#keys + 1] = jobKey
    keys[#keys + 1] = jobKey .. ":logs"
    keys[#keys + 1] = jobKey .. ":dependencies"
    keys[#keys + 1] = jobKey .. ":processed"
    keys[#keys + 1] = jobKey .. ":failed"
    keys[#keys + 1] = jobKey .. ":unsuccessful"
    keys[#keys + 1] = jobKey .. ":lock"
  end
  return keys
end
