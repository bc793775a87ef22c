-- lib.lua: helpers prepended, when loaded, to every script whose KEYS start with the
-- core keys (not a command of its own; see RedisScripts). Each script gets the top level
-- and only the functions it calls (library_for): each function here is a closure made
-- anew on every call. A function starts with "local function name(" at the start of a
-- line and ends with the first line that is "end".
--
-- KEYS (the core keys every message script receives first; see RedisKeys.core):
--   KEYS[1] meta      hash    message id -> "generation:priority:queue"
--   KEYS[2] bodies    hash    message id -> body
--   KEYS[3] delayed   zset    message id, scored by eta
--   KEYS[4] leases    zset    message id, scored by lease deadline
--   KEYS[5] ready     hash    queue -> number of ready messages
--   KEYS[6] sequence  string  generation (and lease token) counter
--   KEYS[7] leased    hash    message id -> "deliveries:token" (see Delivery)
--   KEYS[8] empty     hash    "priority:queue" -> 1 for ready lists known to be empty
--     (set by reserve when an LPOP finds nothing, removed when the list gets an entry):
--     reserve skips those lists, so its cost follows the lists that hold something.
-- Each queue also has a wake list (see RedisKeys.wake_list), passed where a script needs it:
-- one token is pushed per message made ready (and a "d" when a delayed message becomes the
-- earliest), and each idle consumer blocks in BLPOP on its queues' wake lists, so a
-- message wakes one consumer; reserve trims a wake list to its queue's ready count.
-- ARGV: none of its own.
-- Returns: nothing; defines locals used by the script that follows.
--
-- Times come from the server's clock (TIME), never the caller's: every consumer judges
-- due times and lease deadlines alike, whatever its own clock says. A script that reads
-- TIME and then writes needs effects replication, the default since Redis 5 and the only
-- mode since 7; it is asked for explicitly for servers configured otherwise.
--
-- Invariant: a stored message (a field of meta) is in exactly one place: leased, delayed,
-- or ready, in which case one entry "generation:id" in its ready list carries its current
-- generation. Entries whose generation differs are stale and skipped when popped.

if redis.replicate_commands then
  redis.replicate_commands()
end

local META, BODIES, DELAYED, LEASES, READY, SEQUENCE, LEASED, EMPTY =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
-- Most wake tokens one wake list holds (and one script pushes).
local WAKE_CAP = 1000
-- The command that also publishes a wake-up on a channel named after the wake list, or
-- false: on a Redis Cluster a consumer of several queues cannot BLPOP lists of several
-- slots, so it subscribes instead (RedisScripts sets this line to "SPUBLISH", the shard
-- channel of the queue's slot, on Redis 7+, else "PUBLISH", for redis+cluster://).
local WAKE_PUBLISH = false

-- The server's time, as a string with microseconds (Lua prints numbers with 14 digits).
local function clock()
  local time = redis.call("TIME")
  return time[1] .. "." .. string.format("%06d", tonumber(time[2]))
end

-- The server's time plus ``seconds``, as a string.
local function clock_plus(seconds)
  return string.format("%.6f", tonumber(clock()) + tonumber(seconds))
end

-- "deliveries:token" of a message: its unsettled reservations and its latest lease token.
local function lease_info(id)
  local info = redis.call("HGET", LEASED, id)
  if not info then
    return 0, ""
  end
  local separator = string.find(info, ":", 1, true)
  return tonumber(string.sub(info, 1, separator - 1)), string.sub(info, separator + 1)
end

-- True unless ``token`` is given and is not the message's latest lease token (fencing).
local function holds(id, token)
  if token == "" then
    return true
  end
  local _, current = lease_info(id)
  return current == token
end

-- Wake list -> tokens to push once the script is done ("1" per message made ready), and
-- the wake lists to push a "d" to (a delayed message is the earliest now: a waiter times
-- its wait again, and does not return for it).
local wake, wake_delay = {}, {}

local function parse_meta(meta)
  local generation, priority, queue = string.match(meta, "^(%d+):(%d):(.*)$")
  return generation, tonumber(priority), queue
end

-- "generation:id" of a ready-list entry; nil for a malformed one (callers skip it).
local function parse_entry(entry)
  local separator = string.find(entry, ":", 1, true)
  if not separator then
    return nil, nil
  end
  return string.sub(entry, 1, separator - 1), string.sub(entry, separator + 1)
end

local function format_meta(generation, priority, queue)
  return generation .. ":" .. priority .. ":" .. queue
end

-- The field of a ready list in the empty hash.
local function empty_field(priority, queue)
  return priority .. ":" .. queue
end

-- Push an entry onto a ready list (at ``priority`` of ``queue``); wake one of the queue's
-- idle consumers.
local function enqueue(list_key, queue, wake_key, id, generation, front, priority)
  local entry = generation .. ":" .. id
  local length
  if front then
    length = redis.call("LPUSH", list_key, entry)
  else
    length = redis.call("RPUSH", list_key, entry)
  end
  redis.call("HINCRBY", READY, queue, 1)
  if length == 1 then -- it may be marked empty
    redis.call("HDEL", EMPTY, empty_field(priority, queue))
  end
  wake[wake_key] = (wake[wake_key] or 0) + 1
end

-- Delay a message until eta; wake one of the queue's idle consumers if it is now the
-- earliest (waiters time their wait by the earliest).
local function delay(id, eta, wake_key)
  redis.call("ZADD", DELAYED, eta, id)
  local first = redis.call("ZRANGE", DELAYED, 0, 0)
  if first[1] == id then
    wake_delay[wake_key] = true
  end
end

-- Take a stored message out of wherever it waits (lease, delay or ready list; its ready
-- entry becomes stale). Returns its meta, or false if no such message is stored.
local function detach(id)
  local meta = redis.call("HGET", META, id)
  if not meta then
    return false
  end
  if redis.call("ZREM", LEASES, id) == 0 and redis.call("ZREM", DELAYED, id) == 0 then
    local _, _, queue = parse_meta(meta)
    redis.call("HINCRBY", READY, queue, -1)
  end
  return meta
end

local function delete_message(id)
  if detach(id) then
    redis.call("HDEL", META, id)
    redis.call("HDEL", BODIES, id)
  end
  redis.call("HDEL", LEASED, id)
end

local function write_record(key, record, ttl_ms, channel)
  if tonumber(ttl_ms) > 0 then
    redis.call("SET", key, record, "PX", ttl_ms)
  else
    redis.call("SET", key, record)
  end
  -- The record itself is the message: a watcher needs no GET after its wake-up.
  if channel ~= "" then
    redis.call("PUBLISH", channel, record)
  end
end

-- Records (and revocations) kept in another database of this server: ``spec`` is
-- "records_db:messages_db" ("" when they share the messages' database). SELECT inside a
-- script changes the script's database only, never the caller's connection.
local function use_records_db(spec, records)
  if spec == "" then
    return
  end
  local separator = string.find(spec, ":", 1, true)
  if records then
    redis.call("SELECT", string.sub(spec, 1, separator - 1))
  else
    redis.call("SELECT", string.sub(spec, separator + 1))
  end
end

local function send_wakeups()
  for wake_key in pairs(wake_delay) do
    if not wake[wake_key] then
      redis.call("RPUSH", wake_key, "d")
      if WAKE_PUBLISH then
        redis.call(WAKE_PUBLISH, wake_key, "d")
      end
    end
  end
  for wake_key, count in pairs(wake) do
    local tokens = {}
    for index = 1, math.min(count, WAKE_CAP) do
      tokens[index] = "1"
    end
    -- Kept within twice WAKE_CAP when nobody consumes the queue (trimmed once in
    -- WAKE_CAP pushes, not on each); reserve trims them to the ready count.
    if redis.call("RPUSH", wake_key, unpack(tokens)) > 2 * WAKE_CAP then
      redis.call("LTRIM", wake_key, 0, WAKE_CAP - 1)
    end
    if WAKE_PUBLISH then
      redis.call(WAKE_PUBLISH, wake_key, "1")
    end
  end
end

