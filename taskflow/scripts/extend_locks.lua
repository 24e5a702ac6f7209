--[[
  Renew the locks of a worker's active jobs, all in one call.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] the worker's lock token
  ARGV[3] lock duration, ms
  ARGV[4..] ids of the jobs the worker is running

  Returns the ids whose lock the worker no longer owns.
]]
local prefix = ARGV[1]
local lost = {}
for i = 4, #ARGV do
  local lockKey = prefix .. ARGV[i] .. ":lock"
  if rcall("GET", lockKey) == ARGV[2] then
    rcall("PEXPIRE", lockKey, ARGV[3])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
