-- retry_dead_letter.lua: move a dead letter back to the back of its queue
-- (Transport.retry_dead_letter).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9]     dead letters hash
-- KEYS[10]    dead letter index zset
-- KEYS[11..20] the 10 ready lists of the dead letter's queue
-- KEYS[21]    the queue's wake list
-- ARGV[1]     message id
-- ARGV[2]     the dead letter's queue as the caller read it
-- Returns: 1 moved; 0 no such dead letter; -1 it names another queue than ARGV[2]
-- (nothing changed: read it again and retry).
--
-- Packed dead letter: "failed_at:priority:queue_bytes:reason_bytes:" queue reason body.

local id, expected_queue = ARGV[1], ARGV[2]
local packed = redis.call("HGET", KEYS[9], id)
if not packed then
  return 0
end
local _, priority, queue_bytes, reason_bytes, start =
  string.match(packed, "^([^:]*):(%d):(%d+):(%d+):()")
priority, queue_bytes, reason_bytes = tonumber(priority), tonumber(queue_bytes), tonumber(reason_bytes)
local queue = string.sub(packed, start, start + queue_bytes - 1)
if queue ~= expected_queue then
  return -1
end
local body = string.sub(packed, start + queue_bytes + reason_bytes)

detach(id)
redis.call("HDEL", LEASED, id)
local generation = tostring(redis.call("INCR", SEQUENCE))
redis.call("HSET", META, id, format_meta(generation, priority, queue))
redis.call("HSET", BODIES, id, body)
enqueue(KEYS[11 + priority], queue, KEYS[21], id, generation, false, priority)
redis.call("HDEL", KEYS[9], id)
redis.call("ZREM", KEYS[10], id)
send_wakeups()
return 1
