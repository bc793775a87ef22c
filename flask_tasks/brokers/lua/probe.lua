-- probe.lua: whether a queue may have work to reserve (RedisClusterBroker.reserve, which
-- probes the queues after the first, one call each, all pipelined, and runs reserve.lua
-- only on those that answer 1). Reads only. Standalone (no lib.lua): it runs once per
-- idle queue per reserve, so it stays small.
--
-- KEYS[1]     the queue's ready hash (queue -> number of ready messages)
-- KEYS[2]     the queue's delayed set (message id, scored by eta)
-- KEYS[3]     the queue's lease set (message id, scored by lease deadline)
-- ARGV[1]     queue name
-- Returns: 1 when the queue has ready messages, or a delayed message or a lease that is
-- due by the server's clock (reserve.lua would promote it); else 0.

if tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or 0) > 0 then
  return 1
end
local time = redis.call("TIME")
local now = time[1] .. "." .. string.format("%06d", tonumber(time[2]))
for index = 2, 3 do
  if #redis.call("ZRANGEBYSCORE", KEYS[index], "-inf", now, "LIMIT", 0, 1) > 0 then
    return 1
  end
end
return 0
