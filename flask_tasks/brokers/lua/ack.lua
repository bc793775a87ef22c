-- ack.lua: forget a delivered message, optionally storing its result record
-- (Broker.ack_with_records; pipelined, one call per message).
--
-- KEYS[1..6]  core keys (see lib.lua)
-- KEYS[7]     result key (only when a record is given)
-- ARGV[1]     message id
-- ARGV[2]     result record (only with KEYS[7])
-- ARGV[3]     record time to live in milliseconds (0: no expiry)
-- ARGV[4]     result channel
-- Returns: 1.

delete_message(ARGV[1])
if KEYS[7] then
  write_record(KEYS[7], ARGV[2], ARGV[3], ARGV[4])
end
return 1
