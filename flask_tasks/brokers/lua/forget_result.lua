-- forget_result.lua: delete a result record and notify its watchers (Store.forget_result).
--
-- KEYS[1]     result key
-- ARGV[1]     result channel
-- Publishes: an empty message (no record) on the result channel.
--   (with SPUBLISH on a Redis 7+ Cluster, redis+cluster://: the channel is in the key's slot)
-- Returns: 1 if a record was deleted, else 0.

local deleted = redis.call("DEL", KEYS[1])
redis.call("PUBLISH", ARGV[1], "")
return deleted
