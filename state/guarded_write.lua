-- segstream key schema v1: guarded writes of customer hashes (see docs/redis-schema.md).
--
-- KEYS: customer hashes. The store calls this with ONE key per call by default, so that
-- the script touches a single hash slot (Redis Cluster). Several keys per call are allowed
-- only when the caller knows they share a slot (or the server is not a cluster).
--
-- ARGV[1] = TTL in seconds (0 = none)
-- ARGV[2] = MessagePack array of records, one per key, in KEYS order. A record is
--   { kind, ts, n, <n fields to delete>..., <field, value pairs>... }
--   kind "a": an online update; ts = time of the last event applied; the pairs start with
--             _p<partition>, <offset> of that event.
--   kind "s": an offline seed; ts = its snapshot time as_of; the pairs start with _as_of, ts.
--
-- An update is skipped when the stored offset of its partition is >= its offset, or its
-- event time is <= the stored _as_of. A seed is skipped when the stored _as_of or
-- decay_ts is later than its as_of. Numbers compare as doubles (exact up to 2^53).
-- Applied: the listed fields (values now unknown) are deleted, the pairs written.
--
-- Returns a flat array: applied (1/0), previous segment_id (or nil), for each key.

local ttl = tonumber(ARGV[1])
local records = cmsgpack.unpack(ARGV[2])
if #records ~= #KEYS then
  return redis.error_reply("segstream guarded_write: " .. #records .. " records for " .. #KEYS .. " keys")
end
local out = {}
for k = 1, #KEYS do
  local key = KEYS[k]
  local r = records[k]
  local kind = r[1]
  local ts = tonumber(r[2])
  local ndel = r[3]
  local first = 4 + ndel
  local cur
  local apply
  if kind == "a" then
    cur = redis.call("HMGET", key, "segment_id", r[first], "_as_of")
    apply = not ((cur[2] and tonumber(cur[2]) >= tonumber(r[first + 1])) or (cur[3] and ts <= tonumber(cur[3])))
  elseif kind == "s" then
    cur = redis.call("HMGET", key, "segment_id", "_as_of", "decay_ts")
    apply = not ((cur[2] and tonumber(cur[2]) > ts) or (cur[3] and tonumber(cur[3]) > ts))
  else
    return redis.error_reply("segstream guarded_write: unknown record kind " .. tostring(kind))
  end
  if apply then
    if ndel > 0 then
      redis.call("HDEL", key, unpack(r, 4, first - 1))
    end
    redis.call("HSET", key, unpack(r, first))
    if ttl > 0 then
      redis.call("EXPIRE", key, ttl)
    end
    out[k * 2 - 1] = 1
  else
    out[k * 2 - 1] = 0
  end
  out[k * 2] = cur[1]
end
return out
