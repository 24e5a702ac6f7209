--[[
  Make a staged flow visible to workers in one short call: leaves go to their
  queues' ready lists (or delayed / prioritized), parents to "waiting-children".

  KEYS: the engine keys of the root's queue (see _lib.lua).
  ARGV[1] job key prefix of the root's queue
  ARGV[2] flow id
  ARGV[3] number of groups, then per group: queue prefix, kind, count, ids...
    kind: "wait" (FIFO, pushed in the given order), "ready" (each by its own
    priority and delay fields, and lifo from its opts), "parent" (waiting-children)

  Returns 1, or 0 when the staged flow is gone (discarded or expired).
]]
local prefix = ARGV[1]
local flowId = ARGV[2]
if rcall("ZREM", prefix .. "flows-staging", flowId) == 0 then
  return 0
end
local now = nowMs()
local at = 4

local function marker(base)
  if rcall("HEXISTS", base .. "meta", "paused") == 0 then
    rcall("ZADD", base .. "marker", 0, "0")
  end
end

local function readyOne(base, id)
  local fields = rcall("HMGET", base .. id, "priority", "delay", "opts")
  local lifo = string.find(fields[3] or "", '"lifo":true', 1, true) ~= nil
  readyIn(base, id, tonumber(fields[1]) or 0, lifo, tonumber(fields[2]) or 0, now, nil)
end

for _ = 1, tonumber(ARGV[3]) do
  local base, kind, count = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local first, last = at + 3, at + 2 + count
  if kind == "wait" then
    for i = first, last, 5000 do
      rcall("LPUSH", base .. "wait", unpack(ARGV, i, math.min(i + 4999, last)))
    end
    marker(base)
  elseif kind == "parent" then
    for i = first, last do
      rcall("ZADD", base .. "waiting-children", now, ARGV[i])
    end
  else
    for i = first, last do
      readyOne(base, ARGV[i])
    end
  end
  at = last + 1
end
rcall("UNLINK", prefix .. "flow:" .. flowId)
return 1
