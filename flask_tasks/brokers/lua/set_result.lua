-- set_result.lua: store a result record and notify its watchers (Store.set_result).
--
-- KEYS[1]     result key
-- ARGV[1]     record
-- ARGV[2]     time to live in milliseconds (0: no expiry)
-- ARGV[3]     result channel
-- Publishes: the record on the result channel.
--   (with SPUBLISH on a Redis 7+ Cluster, redis+cluster://: the channel is in the key's slot)
-- Returns: 1.

if tonumber(ARGV[2]) > 0 then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
else
  redis.call("SET", KEYS[1], ARGV[1])
end
redis.call("PUBLISH", ARGV[3], ARGV[1])  -- the record itself: watchers need no GET
return 1
