-- publish.lua: store messages and result records in one step
-- (Broker.publish_with_records).
--
-- KEYS[1..8]    core keys (see lib.lua)
-- KEYS[8+i]     ready list of envelope i at its priority, for i = 1..N
-- KEYS[8+N+i]   wake list of envelope i's queue
-- KEYS[8+2N+j]  result key of record j, for j = 1..R
-- ARGV[1]     N, number of envelopes
-- ARGV[2]     record time to live in milliseconds (0: no expiry)
-- ARGV[3]     "records_db:messages_db" when the records live in another database of this
--   server, else "" (see use_records_db)
-- then 5 per envelope: id, queue, priority, delay (seconds from now by the server's
--   clock; "" when ready now), body
-- then 2 per record: record, result channel
-- Returns: N.
--
-- An id already stored is replaced: its old place (lease, delay, ready entry) is dropped.
-- A ready message goes to the back of its list; a delayed one into the delayed set.
-- Records are written first: a SELECT that fails stops the script before any write.

local count = tonumber(ARGV[1])
local record_ttl = ARGV[2]

local records_base = 3 + count * 5
if #ARGV > records_base then
  use_records_db(ARGV[3], true)
  for j = 1, (#ARGV - records_base) / 2 do
    local at = records_base + (j - 1) * 2
    write_record(KEYS[8 + 2 * count + j], ARGV[at + 1], record_ttl, ARGV[at + 2])
  end
  use_records_db(ARGV[3], false)
end

local first_generation = redis.call("INCRBY", SEQUENCE, count) - count

for i = 1, count do
  local base = 3 + (i - 1) * 5
  local id, queue, priority, wait, body =
    ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local wake_key = KEYS[8 + count + i]
  local generation = tostring(first_generation + i)
  if detach(id) then -- a fresh id has no place to leave, nor a lease to forget
    redis.call("HDEL", LEASED, id)
  end
  redis.call("HSET", META, id, format_meta(generation, priority, queue))
  redis.call("HSET", BODIES, id, body)
  if wait == "" then
    enqueue(KEYS[8 + i], queue, wake_key, id, generation, false, priority)
  else
    delay(id, clock_plus(wait), wake_key)
  end
end

send_wakeups()
return count
