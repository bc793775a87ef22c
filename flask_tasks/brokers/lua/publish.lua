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
-- ARGV[4]     "1" when every id is fresh (made by the producer for this publish, never
--   stored: see Envelope.fresh), else ""
-- then 5 per envelope: id, queue, priority, delay (seconds from now by the server's
--   clock; "" when ready now), body
-- then 2 per record: record, result channel ("": not published, nobody can listen yet)
-- Returns: N.
--
-- An id already stored is replaced: its old place (lease, delay, ready entry) is dropped.
-- Fresh ids skip that check, and take generation 0 (no ready entry can carry their id
-- yet, so none can be mistaken for theirs; any later publish of the id takes a new one).
-- A ready message goes to the back of its list; a delayed one into the delayed set.
-- Records are written first: a SELECT that fails stops the script before any write.

local count = tonumber(ARGV[1])
local record_ttl = ARGV[2]
local all_fresh = ARGV[4] == "1"
-- ARGV before the first envelope's.
local HEAD = 4

local records_base = HEAD + count * 5
if #ARGV > records_base then
  use_records_db(ARGV[3], true)
  for j = 1, (#ARGV - records_base) / 2 do
    local at = records_base + (j - 1) * 2
    write_record(KEYS[8 + 2 * count + j], ARGV[at + 1], record_ttl, ARGV[at + 2])
  end
  use_records_db(ARGV[3], false)
end

-- One fresh message, ready now (a delay() call): straight to its list.
if all_fresh and count == 1 and ARGV[HEAD + 4] == "" then
  local id, queue, priority = ARGV[HEAD + 1], ARGV[HEAD + 2], ARGV[HEAD + 3]
  redis.call("HSET", META, id, format_meta("0", priority, queue))
  redis.call("HSET", BODIES, id, ARGV[HEAD + 5])
  if redis.call("RPUSH", KEYS[9], "0:" .. id) == 1 then -- it may be marked empty
    redis.call("HDEL", EMPTY, empty_field(priority, queue))
  end
  redis.call("HINCRBY", READY, queue, 1)
  wake[KEYS[10]] = 1
  send_wakeups()
  return 1
end

-- Most arguments one command is given here (Lua's unpack has a limit).
local CHUNK = 1000

local function envelope(i)
  local base = HEAD + (i - 1) * 5
  return ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
end

-- Fresh ids, none repeated (the common case, a group above all): their fields and list
-- entries are written with a few variadic commands. Otherwise one message at a time.
local fresh, seen = true, {}
for first = 1, all_fresh and 0 or count, CHUNK do
  local ids = {}
  for i = first, math.min(count, first + CHUNK - 1) do
    local id = ARGV[HEAD + (i - 1) * 5 + 1]
    if seen[id] then
      fresh = false
    end
    seen[id] = true
    ids[#ids + 1] = id
  end
  for _, stored in ipairs(redis.call("HMGET", META, unpack(ids))) do
    if stored then
      fresh = false
    end
  end
  if not fresh then
    break
  end
end

local first_generation = 0
if not all_fresh then
  first_generation = redis.call("INCRBY", SEQUENCE, count) - count
end

if fresh then
  local metas, bodies = {}, {}
  local lists, entries, list_info, ready = {}, {}, {}, {}
  local function flush(key, pairs_)
    if #pairs_ > 0 then
      redis.call("HSET", key, unpack(pairs_))
    end
  end
  for i = 1, count do
    local id, queue, priority, wait, body = envelope(i)
    local generation = all_fresh and "0" or tostring(first_generation + i)
    metas[#metas + 1], metas[#metas + 2] = id, format_meta(generation, priority, queue)
    bodies[#bodies + 1], bodies[#bodies + 2] = id, body
    if #metas >= CHUNK then
      flush(META, metas)
      flush(BODIES, bodies)
      metas, bodies = {}, {}
    end
    local wake_key = KEYS[8 + count + i]
    if wait == "" then
      local list_key = KEYS[8 + i]
      if not entries[list_key] then
        lists[#lists + 1] = list_key
        entries[list_key] = {}
        list_info[list_key] = empty_field(priority, queue)
      end
      local pending = entries[list_key]
      pending[#pending + 1] = generation .. ":" .. id
      ready[queue] = (ready[queue] or 0) + 1
      wake[wake_key] = (wake[wake_key] or 0) + 1
    else
      delay(id, clock_plus(wait), wake_key)
    end
  end
  flush(META, metas)
  flush(BODIES, bodies)
  for _, list_key in ipairs(lists) do
    local pending = entries[list_key]
    for first = 1, #pending, CHUNK do
      local last = math.min(#pending, first + CHUNK - 1)
      local length = redis.call("RPUSH", list_key, unpack(pending, first, last))
      if first == 1 and length == last then -- the list was empty: it may be marked so
        redis.call("HDEL", EMPTY, list_info[list_key])
      end
    end
  end
  for queue, added in pairs(ready) do
    redis.call("HINCRBY", READY, queue, added)
  end
else
  for i = 1, count do
    local id, queue, priority, wait, body = envelope(i)
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
end

send_wakeups()
return count
