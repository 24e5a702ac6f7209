--[[
  Renew the locks of a worker's jobs, all in one call: every job in "active" whose
  lock holds the worker's token. Scanning "active" (not only the ids the worker knows
  it runs) also renews jobs it took whose reply it hasn't read yet, e.g. while a task
  keeps its event loop busy.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] the worker's lock token
  ARGV[3] lock duration, ms
  ARGV[4..] ids of the jobs the worker knows it runs

  Returns the known ids whose lock the worker no longer owns.
]]
local prefix = ARGV[1]
local renewed = {}
for _, jobId in ipairs(rcall("LRANGE", KEYS[2], 0, -1)) do
  local lockKey = prefix .. jobId .. ":lock"
  if rcall("GET", lockKey) == ARGV[2] then
    rcall("PEXPIRE", lockKey, ARGV[3])
    renewed[jobId] = true
  end
end
local lost = {}
for i = 4, #ARGV do
  if not renewed[ARGV[i]] then
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
