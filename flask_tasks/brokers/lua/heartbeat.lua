-- heartbeat.lua: record that a worker is alive, with its info (Store.heartbeat).
--
-- KEYS[1]     workers hash: worker name -> info
-- KEYS[2]     workers expiry zset: worker name, scored by when its heartbeat expires
-- ARGV[1]     worker name
-- ARGV[2]     info
-- ARGV[3]     expiry of this heartbeat (Unix time)
-- ARGV[4]     now (Unix time)
-- ARGV[5]     batch, most expired workers to drop
-- Returns: the number of expired workers dropped.
--
-- Workers that stopped without a word expire: each heartbeat drops a batch of them, and
-- Store.workers ignores those not dropped yet.

local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", ARGV[4], "LIMIT", 0, ARGV[5])
for _, name in ipairs(expired) do
  redis.call("HDEL", KEYS[1], name)
  redis.call("ZREM", KEYS[2], name)
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[1])
return #expired
