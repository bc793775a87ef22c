-- purge.lua: drop up to a batch of ready messages of one queue (Transport.purge).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9..18] the 10 ready lists of the queue
-- KEYS[19]    the queue's wake list
-- ARGV[1]     queue name
-- ARGV[2]     batch, most list entries to pop in this call
-- Returns: {dropped, done}: messages dropped, and 1 once every list is empty (the ready
-- count is then reset to 0), else 0 (call again).

local queue, batch = ARGV[1], tonumber(ARGV[2])
local dropped, popped = 0, 0
for priority = 0, 9 do
  local key = KEYS[9 + priority]
  while popped < batch do
    local entry = redis.call("LPOP", key)
    if not entry then
      break
    end
    popped = popped + 1
    local generation, id = parse_entry(entry)
    local meta = id and redis.call("HGET", META, id)
    if meta and parse_meta(meta) == generation and not redis.call("ZSCORE", LEASES, id) then
      redis.call("HDEL", META, id)
      redis.call("HDEL", BODIES, id)
      redis.call("HDEL", LEASED, id)
      dropped = dropped + 1
    end
  end
end

if popped < batch then
  redis.call("HDEL", READY, queue)
  redis.call("DEL", KEYS[19]) -- nothing left to wake anyone for
  return {dropped, 1}
end
redis.call("HINCRBY", READY, queue, -dropped)
return {dropped, 0}
