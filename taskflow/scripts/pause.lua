--[[
  Pause or resume a queue for every worker.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] "paused" or "resumed"

  A paused queue keeps its jobs in wait and has no marker, so idle workers
  stay blocked; resuming puts the marker back when jobs are ready.
  Events: paused, resumed.
]]
if ARGV[2] == "paused" then
  rcall("HSET", KEYS[8], "paused", 1)
  rcall("DEL", KEYS[9])
else
  rcall("HDEL", KEYS[8], "paused")
  if rcall("LLEN", KEYS[1]) > 0 or rcall("ZCARD", KEYS[3]) > 0 then
    rcall("ZADD", KEYS[9], 0, "0")
  end
  markDelayed(KEYS[9], KEYS[4])
end
rcall("XADD", KEYS[7], "*", "event", ARGV[2])
return 1
