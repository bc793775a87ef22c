-- ack.lua: forget a delivered message, optionally storing its result record
-- (Broker.ack_with_records; pipelined, one call per message).
--
-- KEYS[1..8]  core keys (see lib.lua)
-- KEYS[9]     result key (only when a record is given)
-- ARGV[1]     message id
-- ARGV[2]     lease token of the delivery being settled ("": settle whatever is stored)
-- ARGV[3]     result record (only with KEYS[9])
-- ARGV[4]     record time to live in milliseconds (0: no expiry)
-- ARGV[5]     result channel
-- ARGV[6]     "records_db:messages_db" when records live in another database, else ""
-- Returns: 1 settled; 0 refused (fencing: the message was reserved again or settled by
-- someone else since this lease was granted; nothing changed).

local id, token = ARGV[1], ARGV[2]
if token ~= "" and not (redis.call("HEXISTS", META, id) == 1 and holds(id, token)) then
  return 0
end
if KEYS[9] then -- the record first: a SELECT that fails stops before any write
  use_records_db(ARGV[6], true)
  write_record(KEYS[9], ARGV[3], ARGV[4], ARGV[5])
  use_records_db(ARGV[6], false)
end
delete_message(id)
return 1
