--[[
  The last step of obliterate: once every job is gone, delete the queue's own keys.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix

  Returns 1 when the queue was removed, 0 when jobs remain (the caller removes them
  in batches first).
]]
if rcall("LLEN", KEYS[1]) + rcall("LLEN", KEYS[2]) + rcall("ZCARD", KEYS[3])
    + rcall("ZCARD", KEYS[4]) + rcall("ZCARD", KEYS[5]) + rcall("ZCARD", KEYS[6])
    + rcall("ZCARD", KEYS[13]) > 0 then
  return 0
end
rcall("DEL", KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[14],
      ARGV[1] .. "repeat", ARGV[1] .. "limiter", ARGV[1] .. "metrics:completed",
      ARGV[1] .. "metrics:completed:data", ARGV[1] .. "metrics:failed",
      ARGV[1] .. "metrics:failed:data")
return 1
