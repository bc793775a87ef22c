-- release.lua: return a held message for delivery again (Broker.release_with_record).
--
-- KEYS[1..7]  core keys (see lib.lua)
-- KEYS[8..17] the 10 ready lists of the message's queue (none when it was not stored)
-- KEYS[18]    result key (only when a record is given)
-- ARGV[1]     lease token of the delivery being released ("": whatever is stored)
-- ARGV[2]     message id
-- ARGV[3]     the message's queue as the caller read it ("" if it was not stored)
-- ARGV[4]     queue channel
-- ARGV[5]     "1" if ARGV[6] is a new body, else "0"
-- ARGV[6]     new body
-- ARGV[7]     delay in seconds from now by the server's clock ("": back to the front of
--             the queue)
-- ARGV[8]     "1" if ARGV[9] is a result record, else "0"
-- ARGV[9]     result record
-- ARGV[10]    record time to live in milliseconds (0: no expiry)
-- ARGV[11]    result channel
-- Returns: 1 done; 0 refused (fencing: the token is not the message's latest lease;
-- nothing changed); -1 the message is stored under another queue than ARGV[3] (nothing
-- changed: read it again and retry).
--
-- A held message keeps its generation (its ready entry was popped when it was leased);
-- a message that is not held is only touched when a new body is given, and then gets a
-- new generation, like a publish. The release undoes the delivery's count.

local token, id, queue, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local has_body, wait = ARGV[5] == "1", ARGV[7]

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
      redis.call("HSET", BODIES, id, ARGV[6])
    end
    if wait ~= "" and tonumber(wait) > 0 then
      delay(id, clock_plus(wait), channel)
    else
      enqueue(KEYS[8 + priority], queue, channel, id, generation, wait == "")
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

if ARGV[8] == "1" then
  write_record(KEYS[#KEYS], ARGV[9], ARGV[10], ARGV[11])
end
send_wakeups()
return 1
