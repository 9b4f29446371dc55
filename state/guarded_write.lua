-- segstream key schema v1: guarded writes of customer hashes (see docs/redis-schema.md).
--
-- KEYS: one or more customer hashes. Called with ONE key per call by default, so that the
-- script touches a single hash slot (Redis Cluster); a batch of keys per call is allowed
-- only when the caller knows every key is in one slot (or the server is not a cluster).
--
-- ARGV[1] = TTL in seconds (0 = none), then one record per key, in KEYS order:
--   "a", <partition field>, <offset>, <event ts>,   (an online update)
--   "s", <as_of>,                                   (an offline seed)
--   then <n>, <n fields to delete>..., <m>, <m field/value items>...
--
-- An update is skipped when the stored offset of its partition is >= its offset, or its
-- event time is <= the stored _as_of. A seed is skipped when the stored _as_of or
-- decay_ts is newer than its as_of. Offsets and times compare as numbers (doubles: exact
-- up to 2^53).
--
-- Returns a flat array: applied (1/0), previous segment_id (or nil) for each key.

local ttl = tonumber(ARGV[1])
local out = {}
local i = 2
for k = 1, #KEYS do
  local key = KEYS[k]
  local kind = ARGV[i]
  local apply = true
  local cur
  local pfield, offset
  if kind == "a" then
    pfield = ARGV[i + 1]
    offset = ARGV[i + 2]
    local ts = tonumber(ARGV[i + 3])
    i = i + 4
    cur = redis.call("HMGET", key, "segment_id", pfield, "_as_of")
    if (cur[2] and tonumber(cur[2]) >= tonumber(offset)) or (cur[3] and ts <= tonumber(cur[3])) then
      apply = false
    end
  elseif kind == "s" then
    local as_of = tonumber(ARGV[i + 1])
    i = i + 2
    cur = redis.call("HMGET", key, "segment_id", "_as_of", "decay_ts")
    if (cur[2] and tonumber(cur[2]) > as_of) or (cur[3] and tonumber(cur[3]) > as_of) then
      apply = false
    end
  else
    return redis.error_reply("segstream guarded_write: unknown record kind " .. tostring(kind))
  end
  local ndel = tonumber(ARGV[i])
  local dfirst = i + 1
  i = dfirst + ndel
  local nset = tonumber(ARGV[i])
  local sfirst = i + 1
  i = sfirst + nset
  if apply then
    if ndel > 0 then
      redis.call("HDEL", key, unpack(ARGV, dfirst, dfirst + ndel - 1))
    end
    if pfield then
      redis.call("HSET", key, pfield, offset, unpack(ARGV, sfirst, sfirst + nset - 1))
    else
      redis.call("HSET", key, unpack(ARGV, sfirst, sfirst + nset - 1))
    end
    if ttl > 0 then
      redis.call("EXPIRE", key, ttl)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  out[#out + 1] = cur[1]
end
return out
