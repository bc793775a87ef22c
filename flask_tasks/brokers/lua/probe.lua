-- probe.lua: whether a queue may have work to reserve (RedisClusterBroker.reserve, which
-- probes the queues after the first, one call each, all pipelined, and runs reserve.lua
-- only on those that answer 1). Reads only.
--
-- KEYS[1..8]  core keys of the queue (see lib.lua)
-- ARGV[1]     queue name
-- Returns: 1 when the queue has ready messages, or a delayed message or a lease that is
-- due by the server's clock (reserve.lua would promote it); else 0.

if tonumber(redis.call("HGET", READY, ARGV[1]) or 0) > 0 then
  return 1
end
local now = clock()
for _, source in ipairs({DELAYED, LEASES}) do
  if #redis.call("ZRANGEBYSCORE", source, "-inf", now, "LIMIT", 0, 1) > 0 then
    return 1
  end
end
return 0
