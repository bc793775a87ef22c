-- extend.lua: renew the leases of held messages (Transport.extend).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- ARGV[1]     lease, in seconds from now by the server's clock
-- then 2 per message: id, lease token ("": renew whatever lease it is under)
-- Returns: the number of leases renewed.
--
-- A message no longer leased, or leased under another token, is left alone.

local deadline = clock_plus(ARGV[1])
local renewed = 0
for index = 2, #ARGV, 2 do
  local id, token = ARGV[index], ARGV[index + 1]
  if redis.call("ZSCORE", LEASES, id) and holds(id, token) then
    redis.call("ZADD", LEASES, deadline, id)
    renewed = renewed + 1
  end
end
return renewed
