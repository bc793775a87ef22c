-- dead_letter.lua: drop a message and keep it as a dead letter (Transport.dead_letter).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9]     dead letters hash: id -> packed dead letter
-- KEYS[10]    dead letter index zset: id scored by failed_at
-- ARGV[1]     message id
-- ARGV[2]     packed dead letter (see RedisBroker: failed_at, priority, queue, reason, body)
-- ARGV[3]     failed_at (Unix time)
-- ARGV[4]     most dead letters to keep; the oldest beyond it are dropped
-- Returns: number of old dead letters dropped to stay within ARGV[4].

local id, limit = ARGV[1], tonumber(ARGV[4])
delete_message(id)
redis.call("HSET", KEYS[9], id, ARGV[2])
redis.call("ZADD", KEYS[10], ARGV[3], id)

local excess = redis.call("ZCARD", KEYS[10]) - limit
if excess <= 0 then
  return 0
end
local oldest = redis.call("ZRANGE", KEYS[10], 0, excess - 1)
for _, old in ipairs(oldest) do
  redis.call("HDEL", KEYS[9], old)
end
redis.call("ZREMRANGEBYRANK", KEYS[10], 0, excess - 1)
return excess
