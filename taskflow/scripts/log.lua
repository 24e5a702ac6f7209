--[[
  Append a line to a job's log, keeping at most a given number of lines.

  KEYS: the queue's engine keys (see _lib.lua).
  ARGV[1] job key prefix
  ARGV[2] job id
  ARGV[3] the line
  ARGV[4] lines to keep (0 = all)

  Returns the number of lines kept, or 0 when the job no longer exists.
]]
local jobKey = ARGV[1] .. ARGV[2]
if rcall("EXISTS", jobKey) == 0 then
  return 0
end
local count = rcall("RPUSH", jobKey .. ":logs", ARGV[3])
local keepLines = tonumber(ARGV[4])
if keepLines > 0 and count > keepLines then
  rcall("LTRIM", jobKey .. ":logs", -keepLines, -1)
  return keepLines
end
return count
