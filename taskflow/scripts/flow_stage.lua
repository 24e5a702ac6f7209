--[[
  Stage part of a large flow: write its jobs where no worker looks yet. A flow too
  big for one short call is staged in chunks, then made visible by flow_commit in
  one short call; a producer that dies in between leaves only staged jobs, which the
  stalled check removes after an hour.

  KEYS: the engine keys of the root's queue (see _lib.lua).
  ARGV[1] job key prefix of the root's queue
  ARGV[2] flow id (names the staging set "<prefix>flow:<id>")
  ARGV[3] number of nodes in this chunk, n
  then 11 values per node, from ARGV[4]:
    queue prefix, id, name, data, opts (JSON), delay ms, priority, parent key ("" = root),
    parent (JSON {id, queueKey}, "" = root), children keys in order (JSON, "" = leaf),
    "1" when the id is a custom one (refused if taken)

  Returns 1, or {0, index} when a node's custom id is taken (nothing of this chunk
  is written; the caller discards the chunks before it).
  Events (each node's queue): added, then waiting-children, delayed or waiting.
]]
local prefix = ARGV[1]
local stagingKey = prefix .. "flow:" .. ARGV[2]
local n = tonumber(ARGV[3])
local now = nowMs()
local WIDTH = 11

local function field(i, k)
  return ARGV[4 + (i - 1) * WIDTH + k]
end

for i = 1, n do
  if field(i, 10) == "1" and rcall("EXISTS", field(i, 0) .. field(i, 1)) == 1 then
    return {0, i}
  end
end

local keys = {}
for i = 1, n do
  local base, id = field(i, 0), field(i, 1)
  local key = base .. id
  local opts = field(i, 4)
  keys[i] = key
  rcall("HSET", key, "name", field(i, 2), "data", field(i, 3), "opts", opts,
        "timestamp", now, "delay", field(i, 5), "priority", field(i, 6))
  if field(i, 7) ~= "" then
    rcall("HSET", key, "parentKey", field(i, 7), "parent", field(i, 8))
    rcall("SADD", field(i, 7) .. ":dependencies", key)
  end
  rcall("XADD", base .. "events", "*", "event", "added", "jobId", id, "name", field(i, 2))
  if field(i, 9) ~= "" then
    rcall("HSET", key, "tfc", field(i, 9))
    rcall("XADD", base .. "events", "*", "event", "waiting-children", "jobId", id)
  else
    rcall("XADD", base .. "events", "*", "event", "waiting", "jobId", id)
  end
end
for i = 1, #keys, 5000 do
  rcall("SADD", stagingKey, unpack(keys, i, math.min(i + 4999, #keys)))
end
rcall("ZADD", prefix .. "flows-staging", "NX", now, ARGV[2])
return 1
