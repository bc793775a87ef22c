-- reserve.lua: promote due and expired messages, then lease ready ones (Transport.reserve).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9..]   11 per queue given keys, queue by queue: its 10 ready lists (priority
--   0..9), then its wake list
-- KEYS[last]  revoked zset: task id, scored by when its revocation expires
-- ARGV[1]     lease, in seconds from now by the server's clock
-- ARGV[2]     count, most messages to take (0: only promote)
-- ARGV[3]     batch, most due delayed and most expired leases to look at
-- ARGV[4]     "records_db:messages_db" when the revoked zset lives with the records in
--   another database, else ""
-- then 1 per queue given keys, in precedence order: queue name
-- then, optionally, the queues consumed, in precedence order, up to the last one given
--   keys (those given keys among them): the caller passes the keys of the few queues
--   it expects to take from, not of all (the cost of a call follows its keys), and the
--   names of the queues before them, which take precedence. Reaching a queue with ready
--   messages but no keys before ``count`` is taken stops the take; one without keys holding due
--   or expired messages prevents it: "missing" is returned, and the caller runs the
--   script again with the keys of every queue.
-- Returns: { {id, meta, body, revoked (1 or 0), deliveries, token, ...} taken,
-- {queue, ...}, next due, {ready, ...}, missing (1 or 0) }, the second list naming queues
-- without keys here that hold due or expired messages: the caller runs this script again with
-- those queues (and count 0) to promote them, since only keys in KEYS may be touched.
-- When count > 0 and fewer than count were taken (nothing is left ready in these queues),
-- next due is the seconds until the earliest delayed message or lease falls due ("" if
-- none, or when count were taken, or missing), and the wake lists of the queues given
-- keys are emptied (their tokens are stale). The fourth list holds the ready count of each
-- queue named after the take (in precedence order; empty when count is 0 or missing), for
-- the caller to choose the keys of its next call.
--
-- Due delayed messages go to the back of their list, in eta order; expired leases to the
-- front, first expired first. Each message taken gets a fresh lease token and one more
-- delivery; a malformed ready-list entry is dropped. Queues whose ready count is 0 are
-- skipped (one HMGET of the ready counts), and so are lists marked empty (one HMGET of a
-- queue's 10 marks, for the queues reached that have ready messages); a list found empty
-- is marked. So the work follows the queues that hold something, up to the count. The wake list of a
-- queue messages were taken from is trimmed to its ready count: tokens beyond it would
-- wake consumers for nothing.

-- Times stay strings: Lua would print a number with 14 digits, rounding microseconds.
local now = clock()
local deadline = clock_plus(ARGV[1])
local count, batch = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Queues given keys; the rest of ARGV, if any, names the queues consumed up to them.
local queue_count = (#KEYS - 9) / 11
local REVOKED = KEYS[#KEYS]

local slot = {}
for index = 1, queue_count do
  slot[ARGV[4 + index]] = index
end

local function list_key(index, priority)
  return KEYS[8 + (index - 1) * 11 + priority + 1]
end

local function wake_key(index)
  return KEYS[8 + index * 11]
end

local foreign, seen = {}, {}

-- A records database the server refuses must fail the script before it changes anything.
use_records_db(ARGV[4], true)
use_records_db(ARGV[4], false)

local function promote(source, front)
  local ids = redis.call("ZRANGEBYSCORE", source, "-inf", now, "LIMIT", 0, batch)
  -- Pushed to the front last-first, so that the first to expire ends up first.
  local first, last, step = 1, #ids, 1
  if front then
    first, last, step = #ids, 1, -1
  end
  for position = first, last, step do
    local id = ids[position]
    local meta = redis.call("HGET", META, id)
    if not meta then
      redis.call("ZREM", source, id)
    else
      local generation, priority, queue = parse_meta(meta)
      local index = slot[queue]
      if index then
        redis.call("ZREM", source, id)
        enqueue(list_key(index, priority), queue, wake_key(index), id, generation, front, priority)
      elseif not seen[queue] then
        seen[queue] = true
        foreign[#foreign + 1] = queue
      end
    end
  end
end

promote(DELAYED, false)
promote(LEASES, true)

local taken = {}
local taken_count = 0
local counts, missing = {}, 0
-- The queues in precedence order: those given keys, or those named when listed.
local queues = {}
for index = 1, queue_count do
  queues[index] = ARGV[4 + index]
end
if #ARGV > 4 + queue_count then
  queues = { unpack(ARGV, 5 + queue_count) }
  -- A consumed queue without keys has due or expired messages: they come first.
  for _, queue in ipairs(queues) do
    if seen[queue] then
      missing = 1
    end
  end
end
-- Remaining ready count of each queue messages were taken from, by queue index.
local remaining = {}
if count > 0 and missing == 0 then
  -- Queues are read in precedence order, and only as far as needed: the ready counts of
  -- all of them (one HMGET of a small hash, when there are several), then, for a queue with ready messages only,
  -- the empty marks of its 10 lists. Lists of a queue counted 0 hold stale entries at
  -- most, which are dropped when it has ready messages again.
  -- One queue: its marks alone tell (its count would cost a command and spare none).
  counts = { "1" }
  if #queues > 1 then
    counts = redis.call("HMGET", READY, unpack(queues))
  end
  local found_empty = {}
  for position = 1, #queues do
    if taken_count >= count then
      break
    end
    local queue = queues[position]
    local index = slot[queue]
    if tonumber(counts[position] or "0") > 0 and not index then
      missing = 1
      break
    end
    if index and tonumber(counts[position] or "0") > 0 then
      local fields = {}
      for priority = 0, 9 do
        fields[priority + 1] = empty_field(priority, queue)
      end
      local marked = redis.call("HMGET", EMPTY, unpack(fields))
      for priority = 0, 9 do
        if taken_count >= count then
          break
        end
        if not marked[priority + 1] then
          local key = list_key(index, priority)
          while taken_count < count do
            local entry = redis.call("LPOP", key)
            if not entry then
              found_empty[#found_empty + 1] = fields[priority + 1]
              found_empty[#found_empty + 1] = 1
              break
            end
            local generation, id = parse_entry(entry)
            local meta = id and redis.call("HGET", META, id)
            if
              meta
              and parse_meta(meta) == generation
              and not redis.call("ZSCORE", LEASES, id)
            then
              redis.call("ZADD", LEASES, deadline, id)
              remaining[index] = redis.call("HINCRBY", READY, queue, -1)
              local deliveries = lease_info(id) + 1
              local token = tostring(redis.call("INCR", SEQUENCE))
              redis.call("HSET", LEASED, id, deliveries .. ":" .. token)
              taken[#taken + 1] = id
              taken[#taken + 1] = meta
              taken[#taken + 1] = redis.call("HGET", BODIES, id)
              taken[#taken + 1] = 0 -- revoked: set below
              taken[#taken + 1] = deliveries
              taken[#taken + 1] = token
              taken_count = taken_count + 1
            end
          end
        end
      end
    end
  end
  if #found_empty > 0 then
    redis.call("HSET", EMPTY, unpack(found_empty))
  end
end

send_wakeups()
for index, ready in pairs(remaining) do
  local key = wake_key(index)
  if ready > 0 then
    redis.call("LTRIM", key, 0, ready - 1)
  else
    redis.call("DEL", key)
  end
end

if taken_count > 0 then
  use_records_db(ARGV[4], true)
  for at = 1, #taken, 6 do
    local revoked_until = redis.call("ZSCORE", REVOKED, taken[at])
    taken[at + 3] = (revoked_until and tonumber(revoked_until) > tonumber(now)) and 1 or 0
  end
end
local ready_after = {}
if count > 0 and missing == 0 then
  for position, queue in ipairs(queues) do
    local index = slot[queue]
    local counted = #queues > 1 and tonumber(counts[position] or "0")
    ready_after[position] = (index and remaining[index]) or counted or 0
  end
end
local next_due = ""
if count > 0 and taken_count < count and missing == 0 then
  local earliest
  for _, source in ipairs({DELAYED, LEASES}) do
    local first = redis.call("ZRANGE", source, 0, 0, "WITHSCORES")
    if first[2] and (not earliest or tonumber(first[2]) < earliest) then
      earliest = tonumber(first[2])
    end
  end
  if earliest then
    next_due = string.format("%.6f", earliest - tonumber(now))
  end
  local wake_keys = {}
  for index = 1, queue_count do
    if not remaining[index] then -- else trimmed to its ready count (0) above
      wake_keys[#wake_keys + 1] = wake_key(index)
    end
  end
  if #wake_keys > 0 then
    redis.call("DEL", unpack(wake_keys))
  end
end
return {taken, foreign, next_due, ready_after, missing}
