-- heartbeat.lua: record that a worker is alive, with its info (Store.heartbeat).
--
-- KEYS[1]     workers hash: worker name -> info
-- KEYS[2]     workers expiry zset: worker name, scored by when its heartbeat expires
-- ARGV[1]     worker name
-- ARGV[2]     info
-- ARGV[3]     time to live of this heartbeat, in seconds from now by the server's clock
-- ARGV[4]     batch, most expired workers to drop
-- Returns: the number of expired workers dropped.
--
-- Workers that stopped without a word expire: each heartbeat drops a batch of them, and
-- Store.workers ignores those not dropped yet. Times are the server's (TIME), so a
-- worker with a wrong clock neither outlives its heartbeat nor expires early.

if redis.replicate_commands then
  redis.replicate_commands()  -- TIME, then writes: replicate the effects
end
local time = redis.call("TIME")
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", string.format("%.6f", now),
  "LIMIT", 0, ARGV[4])
for _, name in ipairs(expired) do
  redis.call("HDEL", KEYS[1], name)
  redis.call("ZREM", KEYS[2], name)
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
redis.call("ZADD", KEYS[2], string.format("%.6f", now + tonumber(ARGV[3])), ARGV[1])
return #expired
