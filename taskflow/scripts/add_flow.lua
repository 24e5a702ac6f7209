--[[
  Add a tree of jobs in one call: every node or none. A parent waits in its queue's
  "waiting-children" with its children's keys in ":dependencies"; leaves are ready
  (or delayed) at once. Nodes may be in different queues.

  KEYS: the engine keys of the root's queue (see _lib.lua); other queues' keys are
        built from their prefixes, which share the root's hash tag on a cluster.
  ARGV[1] job key prefix of the root's queue (unused; kept for the common layout)
  ARGV[2] number of nodes, n, parents before their children
  ARGV[3] key of an existing job the root becomes a child of ("" = none): a running
          step job adding children
  then 9 values per node, from ARGV[4]:
    queue prefix ("bull:<queue>:"), id ("" = next from that queue's counter), name,
    data, opts (JSON), delay ms, priority, lifo ("1"/"0"), parent node index
    (1-based, 0 = none)
  A parent's "tfc" field keeps its children's keys in the order given. A child's
  "parent" field carries its failure policy flag (fpof, cpof, idof or rdof) as well
  as its opts: BullMQ's workers read it from there.

  Returns {1, {id per node}}, or {0, index} when a node's custom id exists already
  (nothing is written).
  Events (in each node's queue): added, then waiting-children, waiting or delayed.
]]
local n = tonumber(ARGV[2])
local now = nowMs()
local WIDTH = 9

local function field(i, k)
  return ARGV[4 + (i - 1) * WIDTH + k]
end
local outerParent = ARGV[3]
if outerParent ~= "" and rcall("EXISTS", outerParent) == 0 then
  return {0, 0}
end

-- First pass: refuse the whole tree if a custom id is taken.
for i = 1, n do
  local id = field(i, 1)
  if id ~= "" and rcall("EXISTS", field(i, 0) .. id) == 1 then
    return {0, i}
  end
end

local ids, keys, childKeys = {}, {}, {}
for i = 1, n do
  local base = field(i, 0)
  local id = field(i, 1)
  if id == "" then
    id = tostring(rcall("INCR", base .. "id"))
  end
  ids[i], keys[i], childKeys[i] = id, base .. id, {}
  local parentIndex = tonumber(field(i, 8))
  if parentIndex > 0 then
    local list = childKeys[parentIndex]
    list[#list + 1] = keys[i]
  end
end

local FLAGS = {fail = "fpof", continue = "cpof", ignore = "idof", remove = "rdof"}

-- A child's "parent" field: the parent's id and queue key, and the child's policy flag.
local function parentField(parentId, queueKey, optsText)
  local parent = {id = parentId, queueKey = queueKey}
  local flag = FLAGS[policyOf(optsText)]
  if flag then
    parent[flag] = true
  end
  return cjson.encode(parent)
end

-- Under an existing parent: the root is one more of its children, in order.
local function adoptRoot()
  local queueKey, parentId = string.match(outerParent, "^(.*):([^:]+)$")
  rcall("HSET", keys[1], "parentKey", outerParent, "parent",
        parentField(parentId, queueKey, field(1, 4)))
  rcall("SADD", outerParent .. ":dependencies", keys[1])
  local order = cjson.decode(rcall("HGET", outerParent, "tfc") or "[]")
  order[#order + 1] = keys[1]
  rcall("HSET", outerParent, "tfc", cjson.encode(order))
end

for i = 1, n do
  local base, id, key = field(i, 0), ids[i], keys[i]
  local delay, priority = tonumber(field(i, 5)), tonumber(field(i, 6))
  rcall("HSET", key, "name", field(i, 2), "data", field(i, 3), "opts", field(i, 4),
        "timestamp", now, "delay", delay, "priority", priority)
  local parentIndex = tonumber(field(i, 8))
  if parentIndex > 0 then
    local parentBase = field(parentIndex, 0)
    local parentQueue = string.sub(parentBase, 1, -2)
    rcall("HSET", key, "parentKey", keys[parentIndex], "parent",
          parentField(ids[parentIndex], parentQueue, field(i, 4)))
    rcall("SADD", keys[parentIndex] .. ":dependencies", key)
  end
  rcall("XADD", base .. "events", "*", "event", "added", "jobId", id, "name", field(i, 2))
  if #childKeys[i] > 0 then
    rcall("HSET", key, "tfc", cjson.encode(childKeys[i]))
    rcall("ZADD", base .. "waiting-children", now, id)
    rcall("XADD", base .. "events", "*", "event", "waiting-children", "jobId", id)
  else
    readyIn(base, id, priority, field(i, 7) == "1", delay, now, nil)
  end
end
if outerParent ~= "" then
  adoptRoot()
end
return {1, ids}
