-- release.lua: return a held message for delivery again (Broker.release_with_record).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9..18] the 10 ready lists of the message's queue (none when it was not stored)
-- KEYS[19]    the queue's wake list (none when it was not stored)
-- KEYS[last]  result key (only when a record is given)
-- ARGV[1]     lease token of the delivery being released ("": whatever is stored)
-- ARGV[2]     message id
-- ARGV[3]     the message's queue as the caller read it ("" if it was not stored)
-- ARGV[4]     "1" if ARGV[5] is a new body, else "0"
-- ARGV[5]     new body
-- ARGV[6]     delay in seconds from now by the server's clock ("": back to the front of
--             the queue)
-- ARGV[7]     "1" if ARGV[8] is a result record, else "0"
-- ARGV[8]     result record
-- ARGV[9]     record time to live in milliseconds (0: no expiry)
-- ARGV[10]    result channel
-- Returns: 1 done; 0 refused (fencing: the token is not the message's latest lease;
-- nothing changed); -1 the message is stored under another queue than ARGV[3] (nothing
-- changed: read it again and retry).
--
-- A held message keeps its generation (its ready entry was popped when it was leased);
-- a message that is not held is only touched when a new body is given, and then gets a
-- new generation, like a publish. The release undoes the delivery's count.

local token, id, queue = ARGV[1], ARGV[2], ARGV[3]
local has_body, wait = ARGV[4] == "1", ARGV[6]
local wake_key = KEYS[19]

local meta = redis.call("HGET", META, id)
if token ~= "" and not (meta and holds(id, token)) then
  return 0
end
if meta then
  local generation, priority, stored_queue = parse_meta(meta)
  if stored_queue ~= queue then
    return -1
  end
  local held = redis.call("ZREM", LEASES, id) == 1
  if held or has_body then
    if not held then
      detach(id)
      generation = tostring(redis.call("INCR", SEQUENCE))
      redis.call("HSET", META, id, format_meta(generation, priority, queue))
    end
    if has_body then
      redis.call("HSET", BODIES, id, ARGV[5])
    end
    if wait ~= "" and tonumber(wait) > 0 then
      delay(id, clock_plus(wait), wake_key)
    else
      enqueue(KEYS[9 + priority], queue, wake_key, id, generation, wait == "", priority)
    end
    local deliveries = lease_info(id)
    if deliveries > 1 then
      redis.call("HSET", LEASED, id, (deliveries - 1) .. ":")
    else
      redis.call("HDEL", LEASED, id)
    end
  end
elseif queue ~= "" then
  return -1
end

if ARGV[7] == "1" then
  write_record(KEYS[#KEYS], ARGV[8], ARGV[9], ARGV[10])
end
send_wakeups()
return 1
