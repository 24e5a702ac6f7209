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

-- Make a job of any queue ready (or delayed), given that queue's key prefix: for
-- flows, whose nodes live in several queues. "prev" goes into the event when given.
local function readyIn(base, id, priority, lifo, delay, now, prev)
  local events = base .. "events"
  if delay > 0 then
    local due = now + delay
    rcall("ZADD", base .. "delayed", due * 0x1000, id)
    rcall("XADD", events, "*", "event", "delayed", "jobId", id, "delay", due)
    local first = rcall("ZRANGE", base .. "delayed", 0, 0, "WITHSCORES")
    rcall("ZADD", base .. "marker", math.floor(tonumber(first[2]) / 0x1000), "1")
    return
  end
  if priority > 0 then
    rcall("ZADD", base .. "prioritized", priorityScore(priority, base .. "pc"), id)
  elseif lifo then
    rcall("RPUSH", base .. "wait", id)
  else
    rcall("LPUSH", base .. "wait", id)
  end
  if prev then
    rcall("XADD", events, "*", "event", "waiting", "jobId", id, "prev", prev)
  else
    rcall("XADD", events, "*", "event", "waiting", "jobId", id)
  end
  if rcall("HEXISTS", base .. "meta", "paused") == 0 then
    rcall("ZADD", base .. "marker", 0, "0")
  end
end

-- A parent whose children no longer hold it back moves to its own queue's ready
-- list (the parent's queue may differ from the child's).
local function releaseParent(parentKey, now)
  local base, parentId = string.match(parentKey, "^(.*:)([^:]+)$")
  if rcall("ZREM", base .. "waiting-children", parentId) == 0 then
    return
  end
  local fields = rcall("HMGET", parentKey, "priority", "delay")
  readyIn(base, parentId, tonumber(fields[1]) or 0, false, tonumber(fields[2]) or 0, now,
          "waiting-children")
end

-- A child's failure policy, from its stored options (BullMQ's short keys).
local function policyOf(optsText)
  local opts = cjson.decode(optsText or "{}")
  if opts["fpof"] then return "fail" end
  if opts["cpof"] then return "continue" end
  if opts["idof"] then return "ignore" end
  if opts["rdof"] then return "remove" end
  return "none"
end

local childFailed

-- Fail a waiting parent because of a child, then tell its own parent in turn.
local function failParent(parentKey, reason, depth, now)
  local base, parentId = string.match(parentKey, "^(.*:)([^:]+)$")
  if rcall("ZREM", base .. "waiting-children", parentId) == 0 then
    return
  end
  rcall("ZADD", base .. "failed", now, parentId)
  rcall("HSET", parentKey, "failedReason", reason, "finishedOn", now)
  rcall("XADD", base .. "events", "*", "event", "failed", "jobId", parentId,
        "failedReason", reason, "prev", "waiting-children")
  local fields = rcall("HMGET", parentKey, "parentKey", "opts")
  if fields[1] and depth < 32 then
    childFailed(fields[1], parentKey, reason, policyOf(fields[2]), depth + 1, now)
  end
end

-- Apply a failed child's policy to its parent: fail it, release it now (continue),
-- record the failure and go on (ignore), or forget the dependency (remove).
-- With no policy (BullMQ's default) the parent keeps waiting. As in BullMQ, a child
-- that fails its parent goes to ":unsuccessful"; ":failed" holds the reasons of those
-- the parent goes on without (continue, ignore).
childFailed = function(parentKey, childKey, reason, policy, depth, now)
  if policy == "none" or rcall("SREM", parentKey .. ":dependencies", childKey) == 0 then
    return
  end
  if policy == "fail" then
    rcall("ZADD", parentKey .. ":unsuccessful", now, childKey)
    failParent(parentKey, "child " .. childKey .. " failed: " .. reason, depth, now)
    return
  end
  if policy ~= "remove" then
    rcall("HSET", parentKey .. ":failed", childKey, reason)
  end
  if policy == "continue" or rcall("SCARD", parentKey .. ":dependencies") == 0 then
    releaseParent(parentKey, now)
  end
end

-- DEL in slices: unpack() of a very long table overflows Lua's stack.
local function delInSlices(keys)
  for i = 1, #keys, 5000 do
    rcall("DEL", unpack(keys, i, math.min(i + 4999, #keys)))
  end
end

-- Every key a job may own. A finished job owns no lock any more: "finished" leaves
-- it out, as each name costs a lookup.
local function jobKeysOf(prefix, ids, finished)
  local suffixes = {"", ":logs", ":processed", ":failed", ":unsuccessful", ":dependencies"}
  if not finished then
    suffixes[#suffixes + 1] = ":lock"
  end
  local keys = {}
  for _, jobId in ipairs(ids) do
    local jobKey = prefix .. jobId
    for _, suffix in ipairs(suffixes) do
      keys[#keys + 1] = jobKey .. suffix
    end
  end
  return keys
end

-- Keep or drop a job that just failed outside a worker (the stalled check), by its
-- stored removeOnFail: true drops it, a count or {count, age} prunes the failed set.
local function settleFailed(prefix, jobId, removeOn, now)
  if removeOn == true then
    delInSlices(jobKeysOf(prefix, {jobId}))
    return
  end
  rcall("ZADD", KEYS[6], now, jobId)
  local count = removeOn
  if type(removeOn) == "table" then
    count = removeOn["count"]
    if removeOn["age"] then
      local old = rcall("ZRANGEBYSCORE", KEYS[6], 0, now - removeOn["age"] * 1000,
                        "LIMIT", 0, 1000)
      if #old > 0 then
        rcall("ZREM", KEYS[6], unpack(old))
        delInSlices(jobKeysOf(prefix, old))
      end
    end
  end
  if type(count) == "number" then
    local excess = rcall("ZCARD", KEYS[6]) - count
    if excess > 0 then
      local popped = rcall("ZPOPMIN", KEYS[6], excess)
      local ids = {}
      for i = 1, #popped, 2 do
        ids[#ids + 1] = popped[i]
      end
      delInSlices(jobKeysOf(prefix, ids))
    end
  end
end

-- Remove up to "batch" jobs of a staged flow; the number still staged after.
local function discardStaged(prefix, flowId, batch)
  local stagingKey = prefix .. "flow:" .. flowId
  local keys = {}
  for _, jobKey in ipairs(rcall("SPOP", stagingKey, batch)) do
    keys[#keys + 1] = jobKey
    keys[#keys + 1] = jobKey .. ":dependencies"
  end
  delInSlices(keys)
  local left = rcall("SCARD", stagingKey)
  if left == 0 then
    rcall("ZREM", prefix .. "flows-staging", flowId)
  end
  return left
end
