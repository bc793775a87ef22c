-- publish_one.lua: store one message made just now and ready now, with its PENDING
-- record if it has one, in one step (Broker.publish_with_records for a delay() call).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9]     the ready list of the message's queue at its priority
-- KEYS[10]    the queue's wake list
-- KEYS[11]    the record's result key, when ARGV has a record
-- ARGV[1..4]  id, queue, priority, body
-- ARGV[5..7]  only with a record: the record, its time to live in milliseconds (0: no
--   expiry), "records_db:messages_db" when the records live in another database of this
--   server, else "" (see use_records_db)
-- Returns: 1.
--
-- The id is fresh (made by the producer for this publish, never stored: see
-- Envelope.fresh), so this is publish.lua's path for one fresh message, on its own: no
-- stored message to replace, generation 0, and no watcher of the record to notify. A
-- script of its own needs only a few of lib.lua's helpers: its calls cost the server less.

local id, queue, priority = ARGV[1], ARGV[2], ARGV[3]
if #ARGV > 4 then -- records first: a SELECT that fails stops the script before any write
  use_records_db(ARGV[7], true)
  write_record(KEYS[11], ARGV[5], ARGV[6], "")
  use_records_db(ARGV[7], false)
end
redis.call("HSET", META, id, format_meta("0", priority, queue))
redis.call("HSET", BODIES, id, ARGV[4])
if redis.call("RPUSH", KEYS[9], "0:" .. id) == 1 then -- it may be marked empty
  redis.call("HDEL", EMPTY, empty_field(priority, queue))
end
redis.call("HINCRBY", READY, queue, 1)
wake[KEYS[10]] = 1
send_wakeups()
return 1
