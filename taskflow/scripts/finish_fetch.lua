--[[
  Record the outcome of finished jobs, then take the next ready jobs: the one
  call a busy worker makes per round. With no finished jobs it only takes;
  with a fetch count of 0 it only finishes.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] the worker's lock token
  ARGV[3] lock duration, ms
  ARGV[4] how many jobs to take (0 = none)
  ARGV[5] worker name (stored as the job's "pb")
  ARGV[6] number of finished jobs, n
  ARGV[7] per-minute metrics points to keep (0 = no metrics)
  ARGV[8] number of profiles, p: what finished jobs of this call have in common
  then 6 values per profile, from ARGV[9]:
    stacktrace JSON ("" = leave), retry delay ms, keep count (-1 = all),
    keep age s (-1 = any age), parent key ("" = none),
    failure policy toward the parent: fail, continue, ignore, remove or none
  then 5 values per finished job, from ARGV[9 + 6p]:
    id, outcome, value, attempts made, profile (1-based)
  outcome: "completed" (value = result JSON), "failed" (value = reason; final),
    "exhausted" (final failure after the last attempt), "retry" (back to delayed
    after the delay, or to wait when it is 0), and for step jobs, which count no
    attempt: "delay" (to delayed) and "children" (to waiting-children while it has
    pending children, else back to wait).

  Returns {statuses, jobs, nextDelayedMs}:
    statuses: one per finished job: 1 done, -2 lock not owned, -3 not active
    jobs: {id, {value, ...}} for each job taken: the fields TAKEN names, as before taking
    nextDelayedMs: when to try taking again: the due time of the next delayed
      job, or the end of the rate-limit window when that comes first; 0 = none
  Taking honours, as BullMQ does, pause (meta "paused"), the global concurrency
  cap (meta "concurrency") and the global rate limit (meta "max" / "duration",
  counted in the "limiter" key that BullMQ's workers share).
  Events: completed, failed, retries-exhausted, delayed, waiting, active, drained.
]]
local prefix = ARGV[1]
local token = ARGV[2]
local now = nowMs()
local statuses = {}
local profiles = {}
for i = 1, tonumber(ARGV[8]) do
  local b = 9 + (i - 1) * 6
  profiles[i] = {trace = ARGV[b], delay = tonumber(ARGV[b + 1]), count = tonumber(ARGV[b + 2]),
                 age = tonumber(ARGV[b + 3]), parent = ARGV[b + 4], policy = ARGV[b + 5]}
end
local firstJob = 9 + #profiles * 6
local finished = {completed = {}, failed = {}}
local keep = {completed = {}, failed = {}}
local counted = {completed = 0, failed = 0}

local function notifyParent(parentKey, jobKey, outcome, value, policy)
  if parentKey == "" then
    return
  end
  if outcome ~= "completed" then
    childFailed(parentKey, jobKey, value, policy, 0, now)
    return
  end
  if rcall("SREM", parentKey .. ":dependencies", jobKey) == 0 then
    return
  end
  rcall("HSET", parentKey .. ":processed", jobKey, value)
  if rcall("SCARD", parentKey .. ":dependencies") == 0 then
    releaseParent(parentKey, now)
  end
end

local function retry(jobId, jobKey, delayMs)
  if delayMs > 0 then
    pushDelayed(jobId, now + delayMs)
    rcall("HSET", jobKey, "delay", delayMs)
    rcall("XADD", KEYS[7], "*", "event", "delayed", "jobId", jobId, "delay", now + delayMs)
    markDelayed(KEYS[9], KEYS[4])
  else
    pushReady(jobId, tonumber(rcall("HGET", jobKey, "priority")) or 0, false)
    rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId, "prev", "failed")
    markReady(KEYS[9], KEYS[8])
  end
end

local function waitForChildren(jobId, jobKey)
  if rcall("SCARD", jobKey .. ":dependencies") > 0 then
    rcall("ZADD", KEYS[13], now, jobId)
    rcall("XADD", KEYS[7], "*", "event", "waiting-children", "jobId", jobId, "prev", "active")
  else
    retry(jobId, jobKey, 0)
  end
end

local function settle(jobId, jobKey, outcome, base, profile)
  local value = ARGV[base + 2]
  if outcome == "completed" then
    rcall("HSET", jobKey, "returnvalue", value, "finishedOn", now, "atm", ARGV[base + 3])
    rcall("XADD", KEYS[7], "*", "event", "completed", "jobId", jobId,
          "returnvalue", value, "prev", "active")
  else
    rcall("HSET", jobKey, "failedReason", value, "finishedOn", now, "atm", ARGV[base + 3])
    rcall("XADD", KEYS[7], "*", "event", "failed", "jobId", jobId,
          "failedReason", value, "prev", "active")
    if outcome == "exhausted" then
      rcall("XADD", KEYS[7], "*", "event", "retries-exhausted", "jobId", jobId,
            "attemptsMade", ARGV[base + 3])
    end
    outcome = "failed"
  end
  counted[outcome] = counted[outcome] + 1
  notifyParent(profile.parent, jobKey, outcome, value, profile.policy)
  local keepCount = profile.count
  if keepCount == 0 then
    delInSlices(jobKeysOf(prefix, {jobId}, true))
    return
  end
  local ids = finished[outcome]
  ids[#ids + 1] = now
  ids[#ids + 1] = jobId
  local rule = keep[outcome]
  if keepCount > 0 and (rule.count == nil or keepCount < rule.count) then
    rule.count = keepCount
  end
  local keepAge = profile.age
  if keepAge >= 0 and (rule.age == nil or keepAge < rule.age) then
    rule.age = keepAge
  end
end

-- Release the worker's lock in one call; false when the lock wasn't the worker's (a
-- lock another worker holds now is put back as it was).
local function releaseLock(lockKey)
  local holder = rcall("GETDEL", lockKey)
  if holder == token then
    return true
  end
  if holder then
    rcall("SET", lockKey, holder, "PX", ARGV[3])
  end
  return false
end

local function finishOne(base)
  local jobId = ARGV[base]
  local jobKey = prefix .. jobId
  if not releaseLock(jobKey .. ":lock") then
    return -2
  end
  if rcall("LREM", KEYS[2], -1, jobId) == 0 then
    return -3
  end
  local outcome = ARGV[base + 1]
  local profile = profiles[tonumber(ARGV[base + 4])]
  if profile.trace ~= "" then
    rcall("HSET", jobKey, "stacktrace", profile.trace)
  end
  if outcome == "retry" then
    rcall("HSET", jobKey, "failedReason", ARGV[base + 2], "atm", ARGV[base + 3])
    retry(jobId, jobKey, profile.delay)
  elseif outcome == "delay" then
    retry(jobId, jobKey, profile.delay)
  elseif outcome == "children" then
    waitForChildren(jobId, jobKey)
  else
    settle(jobId, jobKey, outcome, base, profile)
  end
  return 1
end

-- Prune a finished set to the strictest retention asked for in this call.
local function prune(setKey, rule)
  if rule.age then
    local old = rcall("ZRANGEBYSCORE", setKey, 0, now - rule.age * 1000, "LIMIT", 0, 1000)
    if #old > 0 then
      rcall("ZREM", setKey, unpack(old))
      delInSlices(jobKeysOf(prefix, old, true))
    end
  end
  if rule.count then
    local excess = rcall("ZCARD", setKey) - rule.count
    if excess > 0 then
      local popped = rcall("ZPOPMIN", setKey, excess)
      local ids = {}
      for i = 1, #popped, 2 do
        ids[#ids + 1] = popped[i]
      end
      delInSlices(jobKeysOf(prefix, ids, true))
    end
  end
end

-- Per-minute counts in BullMQ's form: "count" (total), "prevTS" and "prevCount" in
-- the hash, one count per elapsed minute pushed to the list (newest first).
local function collectMetrics(outcome, added)
  local maxPoints = tonumber(ARGV[7])
  if maxPoints <= 0 or added == 0 then
    return
  end
  local metaKey = prefix .. "metrics:" .. outcome
  local dataKey = metaKey .. ":data"
  local count = rcall("HINCRBY", metaKey, "count", added) - added
  local prev = rcall("HMGET", metaKey, "prevTS", "prevCount")
  if not prev[1] then
    rcall("HSET", metaKey, "prevTS", now, "prevCount", 0)
    return
  end
  local minutes = math.min(math.floor(now / 60000) - math.floor(tonumber(prev[1]) / 60000),
                           maxPoints)
  if minutes <= 0 then
    return
  end
  local points = {count - tonumber(prev[2])}
  for i = 2, minutes do
    points[i] = 0
  end
  for i = 1, #points, 5000 do
    rcall("LPUSH", dataKey, unpack(points, i, math.min(i + 4999, #points)))
  end
  rcall("LTRIM", dataKey, 0, maxPoints - 1)
  rcall("HSET", metaKey, "prevTS", now, "prevCount", count)
end

local function record(setKey, outcome)
  local entries = finished[outcome]
  collectMetrics(outcome, counted[outcome])
  for i = 1, #entries, 5000 do
    rcall("ZADD", setKey, unpack(entries, i, math.min(i + 4999, #entries)))
  end
  if #entries > 0 then
    prune(setKey, keep[outcome])
  end
end

-- What a worker reads of a job it takes (keep in step with TAKEN_FIELDS in redis.py);
-- "ats" last: it is counted up here.
local TAKEN = {"name", "data", "opts", "atm", "parentKey", "stacktrace", "rjk", "defa", "tfc",
               "ats"}

local function takeOne(jobId)
  local jobKey = prefix .. jobId
  local fields = rcall("HMGET", jobKey, unpack(TAKEN))
  if not fields[1] then
    rcall("LREM", KEYS[2], 1, jobId)
    return nil
  end
  rcall("SET", jobKey .. ":lock", token, "PX", ARGV[3])
  rcall("HSET", jobKey, "processedOn", now, "pb", ARGV[5], "ats",
        (tonumber(fields[#TAKEN]) or 0) + 1)
  rcall("XADD", KEYS[7], "*", "event", "active", "jobId", jobId, "prev", "waiting")
  return {jobId, fields}
end

local function popReady(count)
  local ids = rcall("RPOP", KEYS[1], count) or {}
  if #ids < count then
    local popped = rcall("ZPOPMIN", KEYS[3], count - #ids)
    for i = 1, #popped, 2 do
      ids[#ids + 1] = popped[i]
    end
  end
  return ids
end

-- The global rate limit (meta "max" jobs per "duration" ms): the window is the
-- "limiter" key, a count of the jobs taken in it, expiring when the window ends.
-- Returns how many jobs may start now; when none may, notes when the window ends.
local limiterKey = prefix .. "limiter"
local limitedUntil = nil

local function rateLimitRoom(count, max)
  local used = tonumber(rcall("GET", limiterKey)) or 0
  if used >= max then
    local ttl = rcall("PTTL", limiterKey)
    if ttl > 0 then
      limitedUntil = now + ttl
      return 0
    end
    rcall("DEL", limiterKey)  -- a window without expiry: start a new one
    used = 0
  end
  return math.min(count, max - used)
end

-- Count jobs taken into the window (the first one taken opens it).
local function countTaken(taken, max, duration)
  local used = rcall("INCRBY", limiterKey, taken)
  if used == taken then
    rcall("PEXPIRE", limiterKey, math.floor(math.abs(duration)))
  end
  if used >= max then
    limitedUntil = now + math.max(rcall("PTTL", limiterKey), 0)
  end
end

local function take(count)
  promoteDelayed(prefix, now)
  if count <= 0 or isPaused(KEYS[8]) then
    return {}
  end
  local meta = rcall("HMGET", KEYS[8], "concurrency", "max", "duration")
  local cap, max, duration = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
  if not duration then
    max = nil
  end
  if max then
    count = rateLimitRoom(count, max)
  end
  if cap then
    count = math.min(count, cap - rcall("LLEN", KEYS[2]))
  end
  if count <= 0 then
    return {}
  end
  local ids = popReady(count)
  if #ids == 0 then
    return {}
  end
  if max then
    countTaken(#ids, max, duration)
  end
  rcall("LPUSH", KEYS[2], unpack(ids))
  local jobs = {}
  for _, jobId in ipairs(ids) do
    jobs[#jobs + 1] = takeOne(jobId)
  end
  if rcall("LLEN", KEYS[1]) > 0 or rcall("ZCARD", KEYS[3]) > 0 then
    markReady(KEYS[9], KEYS[8])
  end
  return jobs
end

local n = tonumber(ARGV[6])
local settled = 0
for i = 0, n - 1 do
  statuses[#statuses + 1] = finishOne(firstJob + i * 5)
  if statuses[#statuses] == 1 then
    settled = settled + 1
  end
end
record(KEYS[5], "completed")
record(KEYS[6], "failed")

local jobs = take(tonumber(ARGV[4]))
if settled > 0 then
  trimEvents(KEYS[8], KEYS[7])
  if #jobs == 0 and rcall("LLEN", KEYS[2]) == 0 and rcall("LLEN", KEYS[1]) == 0
      and rcall("ZCARD", KEYS[3]) == 0 then
    rcall("XADD", KEYS[7], "*", "event", "drained")
  end
end
local wakeAt = nextDelayedMs(KEYS[4])
if limitedUntil and (wakeAt == nil or limitedUntil < wakeAt) then
  wakeAt = limitedUntil
end
return {statuses, jobs, wakeAt or 0}
