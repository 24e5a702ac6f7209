--[[
  Write a job scheduler and make sure its next run exists as a job: the one
  write of taskflow.schedule. A producer calls it to create or update a
  scheduler; a worker that took the scheduler's current job calls it with the
  fields unchanged, to move the scheduler to its next run.

  The caller read the scheduler first and passes what it read; when anything
  differs now, nothing is written and the caller reads again (compare-and-set).

  KEYS: the queue's engine keys (see _lib.lua), then, last:
    KEYS[#KEYS - 1] the queue's "repeat" zset: scheduler id -> next run (ms)
    KEYS[#KEYS]     the scheduler's hash, "repeat:<scheduler id>"
  ARGV[1] job key prefix
  ARGV[2] scheduler id
  ARGV[3] next run (ms) the caller read ("" = not in the repeat zset)
  ARGV[4..13] the fields the caller read, "" for absent, in this order:
    name, pattern, every, tz, startDate, endDate, limit, offset, data, opts
  ARGV[14..23] the fields to write, same order ("" = remove the field)
  ARGV[24] the run to place (ms, "" = none left): the first run when the
    scheduler is new or its timing changed, else the first run after now.
    It is used when the scheduler is new or retimed, when its current job was
    taken without a next one (a worker moving on, or healing after a crash),
    and when a finished scheduler gets a higher limit or a later end.

  Returns {status, next run ms or ""}: status is created, updated, unchanged or
  conflict. A next run of "" means the scheduler is finished (limit reached or
  end passed): it leaves the repeat zset, its hash stays so that the same
  schedule() call at the next start does not begin it again.
  The job of a run has the id "repeat:<scheduler id>:<run ms>" and the field
  rjk = scheduler id; a run whose job exists already adds nothing, so each run
  becomes one job at most. The hash's "ic" counts the jobs made.
  Events: added, then delayed or waiting, for a job made; duplicated; removed
  for the delayed job of a retimed scheduler.
]]
local prefix = ARGV[1]
local schedulerId = ARGV[2]
local repeatKey = KEYS[#KEYS - 1]
local schedulerKey = KEYS[#KEYS]
local FIELDS = {"name", "pattern", "every", "tz", "startDate", "endDate", "limit", "offset",
                "data", "opts"}
local TIMING = {"pattern", "every", "tz", "startDate", "offset"}
local now = nowMs()

local function slotText(ms)
  return string.format("%.0f", ms)
end

local function jobIdOf(ms)
  return "repeat:" .. schedulerId .. ":" .. slotText(ms)
end

local function readFields()
  local values = rcall("HMGET", schedulerKey, unpack(FIELDS))
  local fields = {}
  for i, name in ipairs(FIELDS) do
    fields[name] = values[i] or ""
  end
  return fields
end

local function argFields(base)
  local fields = {}
  for i, name in ipairs(FIELDS) do
    fields[name] = ARGV[base + i - 1]
  end
  return fields
end

local function differ(a, b, names)
  for _, name in ipairs(names) do
    if a[name] ~= b[name] then
      return true
    end
  end
  return false
end

-- The job's opts: the template's, with jobId and delay in front (the template is
-- a JSON object that has neither).
local function jobOpts(jobId, delay, template)
  local head = '{"jobId":' .. cjson.encode(jobId) .. ',"delay":' .. slotText(delay)
  if template == "" or template == "{}" then
    return head .. "}"
  end
  return head .. "," .. string.sub(template, 2)
end

local function priorityOf(template)
  local ok, decoded = pcall(cjson.decode, template)
  if ok and type(decoded) == "table" then
    return tonumber(decoded["priority"]) or 0
  end
  return 0
end

local function writeJob(jobKey, jobId, slot, delay)
  local t = rcall("HMGET", schedulerKey, "name", "data", "opts")
  local template = t[3] or "{}"
  rcall("HSET", jobKey, "name", t[1] or "", "data", t[2] or "{}",
        "opts", jobOpts(jobId, delay, template), "priority", priorityOf(template),
        "rjk", schedulerId)
  return t[1] or ""
end

-- Add the job of one run, unless it exists: exactly one job per run.
local function addRunJob(slot)
  local jobId = jobIdOf(slot)
  local jobKey = prefix .. jobId
  if rcall("EXISTS", jobKey) == 1 then
    rcall("XADD", KEYS[7], "*", "event", "duplicated", "jobId", jobId)
    return
  end
  local delay = math.max(0, slot - now)
  local name = writeJob(jobKey, jobId, slot, delay)
  rcall("HSET", jobKey, "timestamp", now, "delay", delay)
  rcall("XADD", KEYS[7], "*", "event", "added", "jobId", jobId, "name", name)
  if delay > 0 then
    pushDelayed(jobId, slot)
    rcall("XADD", KEYS[7], "*", "event", "delayed", "jobId", jobId, "delay", slot)
    markDelayed(KEYS[9], KEYS[4])
  else
    pushReady(jobId, tonumber(rcall("HGET", jobKey, "priority")) or 0, false)
    rcall("XADD", KEYS[7], "*", "event", "waiting", "jobId", jobId)
    markReady(KEYS[9], KEYS[8])
  end
  rcall("HINCRBY", schedulerKey, "ic", 1)
end

-- Make `slot` the next run, or finish the scheduler when its limit or end
-- leaves no run (or no slot is given). Returns the run placed, or nil.
local function place(slot)
  local limit = tonumber(rcall("HGET", schedulerKey, "limit"))
  local endMs = tonumber(rcall("HGET", schedulerKey, "endDate"))
  local made = tonumber(rcall("HGET", schedulerKey, "ic")) or 0
  if not slot or (limit and made >= limit) or (endMs and slot > endMs) then
    rcall("ZREM", repeatKey, schedulerId)
    return nil
  end
  rcall("ZADD", repeatKey, slot, schedulerId)
  addRunJob(slot)
  return slot
end

local function writeFields(fields)
  for _, name in ipairs(FIELDS) do
    if fields[name] == "" then
      rcall("HDEL", schedulerKey, name)
    else
      rcall("HSET", schedulerKey, name, fields[name])
    end
  end
end

-- A job not yet taken: delayed, or ready and never started.
local function awaitsTaking(jobId, jobKey)
  if rcall("ZSCORE", KEYS[4], jobId) then
    return true
  end
  return rcall("EXISTS", jobKey) == 1 and rcall("HEXISTS", jobKey, "processedOn") == 0
end

local function dropDelayed(jobId)
  if rcall("ZREM", KEYS[4], jobId) == 1 then
    delInSlices(jobKeysOf(prefix, {jobId}))
    rcall("XADD", KEYS[7], "*", "event", "removed", "jobId", jobId, "prev", "delayed")
  end
end

local function result(status, ms)
  if status ~= "unchanged" then
    trimEvents(KEYS[8], KEYS[7])
  end
  if ms then
    return {status, slotText(ms)}
  end
  return {status, ""}
end

-- Compare-and-set: the state must be what the caller read.
local score = rcall("ZSCORE", repeatKey, schedulerId)
local current = score and tonumber(score)
if (ARGV[3] == "" and current) or (ARGV[3] ~= "" and current ~= tonumber(ARGV[3])) then
  return {"conflict", ""}
end
local stored = readFields()
if differ(stored, argFields(4), FIELDS) then
  return {"conflict", ""}
end

local wanted = argFields(14)
local slot = tonumber(ARGV[24])
local exists = stored["name"] ~= ""

if not exists or differ(stored, wanted, TIMING) then
  if current then
    dropDelayed(jobIdOf(current))
  end
  writeFields(wanted)
  local placed = place(slot)
  if exists then
    return result("updated", placed)
  end
  return result("created", placed)
end

local status = "unchanged"
if differ(stored, wanted, FIELDS) then
  writeFields(wanted)
  status = "updated"
end

if not current then
  -- Finished: a higher limit or a later end may give it runs again.
  if status == "updated" then
    return result(status, place(slot))
  end
  return result(status, nil)
end

local jobId = jobIdOf(current)
local jobKey = prefix .. jobId
if awaitsTaking(jobId, jobKey) then
  if status == "updated" and rcall("ZSCORE", KEYS[4], jobId) then
    writeJob(jobKey, jobId, current, tonumber(rcall("HGET", jobKey, "delay")) or 0)
  end
  return result(status, current)
end

-- The current run's job was taken and no next run was placed: place it now.
if slot and slot <= current then
  return result(status, current)
end
return result("updated", place(slot))
