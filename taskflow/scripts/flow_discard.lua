--[[
  Remove staged jobs of a flow that will never be committed, a bounded batch per
  call: a flow refused midway, or one whose producer died (found by the stalled
  check's sweep of flows staged over an hour ago).

  KEYS: the engine keys of the root's queue (see _lib.lua).
  ARGV[1] job key prefix of the root's queue
  ARGV[2] flow id
  ARGV[3] batch size

  Returns the number of staged jobs still left (0 = the flow is gone).
]]
return discardStaged(ARGV[1], ARGV[2], tonumber(ARGV[3]))
