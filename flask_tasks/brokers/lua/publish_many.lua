-- publish_many.lua: store many fresh messages, all ready now, and their result records
-- in one step (Broker.publish_with_records for a group; see redis_bulk.py).
--
-- KEYS[1..8]    core keys (see lib.lua)
-- KEYS[8+j]     ready list j (one queue at one priority), for j = 1..L
-- KEYS[8+L+j]   wake list of ready list j's queue
-- KEYS[8+2L+k]  result key of record k, for k = 1..R
-- ARGV[1]     L, number of ready lists
-- ARGV[2]     record time to live in milliseconds (0: no expiry)
-- ARGV[3]     "records_db:messages_db" when the records live in another database of this
--   server, else "" (see use_records_db)
-- then 3 per ready list: queue, priority, number of its messages
-- then 2 per message, list by list, each list's in order: id, body
-- then 1 per record: the record (not published: nobody can listen for a fresh id)
-- Returns: the number of messages.
--
-- Every id is fresh (Envelope.fresh: made by the producer for this publish, never
-- stored), so none is looked for; each takes generation 0, as in publish.lua. Records are
-- written first: a SELECT that fails stops the script before any write.

local lists = tonumber(ARGV[1])
local record_ttl = ARGV[2]
-- ARGV before the first list's.
local HEAD = 3
-- Most arguments one command is given here (Lua's unpack has a limit).
local CHUNK = 1000

local first_message = HEAD + 3 * lists
local count = 0
for j = 1, lists do
  count = count + tonumber(ARGV[HEAD + 3 * j])
end

local records_base = first_message + 2 * count
if #ARGV > records_base then
  use_records_db(ARGV[3], true)
  local first_key = 8 + 2 * lists
  if tonumber(record_ttl) > 0 then
    for k = 1, #ARGV - records_base do
      redis.call("SET", KEYS[first_key + k], ARGV[records_base + k], "PX", record_ttl)
    end
  else
    for k = 1, #ARGV - records_base do
      redis.call("SET", KEYS[first_key + k], ARGV[records_base + k])
    end
  end
  use_records_db(ARGV[3], false)
end

-- Fields of meta and bodies not written yet, as id, value pairs (``held`` items each).
local metas, bodies, held = {}, {}, 0
local function flush()
  if held > 0 then
    redis.call("HSET", META, unpack(metas, 1, held))
    redis.call("HSET", BODIES, unpack(bodies, 1, held))
    held = 0
  end
end

local at = first_message
for j = 1, lists do
  local base = HEAD + 3 * (j - 1)
  local queue, priority, added = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local meta = format_meta("0", priority, queue)
  local list_key = KEYS[8 + j]
  local pushed, entries, waiting = 0, {}, 0
  for _ = 1, added do
    local id = ARGV[at + 1]
    metas[held + 1], metas[held + 2] = id, meta
    bodies[held + 1], bodies[held + 2] = id, ARGV[at + 2]
    held = held + 2
    waiting = waiting + 1
    entries[waiting] = "0:" .. id
    at = at + 2
    if held >= CHUNK then
      flush()
    end
    if waiting >= CHUNK or pushed + waiting == added then
      local length = redis.call("RPUSH", list_key, unpack(entries, 1, waiting))
      if pushed == 0 and length == waiting then -- the list was empty: it may be marked so
        redis.call("HDEL", EMPTY, empty_field(priority, queue))
      end
      pushed, waiting = pushed + waiting, 0
    end
  end
  redis.call("HINCRBY", READY, queue, added)
  local wake_key = KEYS[8 + lists + j]
  wake[wake_key] = (wake[wake_key] or 0) + added
end
flush()

send_wakeups()
return count
