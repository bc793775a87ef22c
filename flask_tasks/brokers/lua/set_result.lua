-- set_result.lua: store a result record and notify its watchers (Store.set_result,
-- Store.set_results_fenced).
--
-- KEYS[1]     result key
-- KEYS[2]     (optional) fence key: the lease token now running the task (Store.fence)
-- ARGV[1]     record
-- ARGV[2]     time to live in milliseconds (0: no expiry)
-- ARGV[3]     result channel
-- ARGV[4]     (with KEYS[2]) the writer's lease token; "": write and drop the fence (a
--             new message under this id)
-- Publishes: the record on the result channel.
--   (with SPUBLISH on a Redis 7+ Cluster, redis+cluster://: the channel is in the key's slot)
-- Returns: 1 stored; 0 refused (the task is fenced with another lease token).

if KEYS[2] then
  if ARGV[4] == "" then
    redis.call("DEL", KEYS[2])
  else
    local fence = redis.call("GET", KEYS[2])
    if fence and fence ~= ARGV[4] then
      return 0
    end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
else
  redis.call("SET", KEYS[1], ARGV[1])
end
redis.call("PUBLISH", ARGV[3], ARGV[1])  -- the record itself: watchers need no GET
return 1
