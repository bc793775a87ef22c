-- incr.lua: add one to a counter and renew its time to live (Store.incr).
--
-- KEYS[1]     counter key
-- ARGV[1]     time to live in milliseconds (at least 1)
-- Returns: the new value.

local value = redis.call("INCR", KEYS[1])
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return value
