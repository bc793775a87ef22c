-- revoke.lua: mark tasks revoked, and with terminate also terminating (Store.revoke).
--
-- KEYS[1]     revoked zset: task id, scored by when its revocation expires
-- KEYS[2]     terminate zset: task id, scored by when its terminate mark expires
-- ARGV[1]     now (Unix time): marks expired by then are dropped from both sets
-- ARGV[2]     expiry of the new marks (Unix time)
-- ARGV[3]     "1" to mark the tasks terminating too, else "0"
-- ARGV[4..]   task ids
-- Returns: the number of task ids marked.
--
-- A revocation without terminate leaves an earlier terminate mark in place: revoking
-- again never withdraws a request to stop a running task.

local now, expiry, terminate = ARGV[1], ARGV[2], ARGV[3] == "1"
for index = 4, #ARGV do
  redis.call("ZADD", KEYS[1], expiry, ARGV[index])
  if terminate then
    redis.call("ZADD", KEYS[2], expiry, ARGV[index])
  end
end
-- Forget expired marks (only those past: cheap, and nothing is read past them).
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
return #ARGV - 3
