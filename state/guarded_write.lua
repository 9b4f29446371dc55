-- segstream key schema v1: guarded writes of customer hashes (see docs/redis-schema.md).
--
-- KEYS: customer hashes. The store calls this with ONE key per call, so that the script
-- touches a single hash slot (Redis Cluster). Several keys per call are allowed only when
-- the caller knows they share a slot (or the server is not a cluster).
--
-- ARGV[1] = TTL in seconds (0 = none)
-- ARGV[2] = MessagePack array of records, one per key, in KEYS order; each record is
--   { kind, partition field, offset, ts, segment_id, segment_name, model_version,
--     updated_at, <one value per STATE_FIELDS entry, false when unknown> }
--   kind "a": an online update; ts is the time of the last event applied.
--   kind "s": an offline seed; partition field and offset are false, ts is its as_of.
--
-- An update is skipped when the stored offset of its partition is >= its offset, or its
-- event time is <= the stored _as_of. A seed is skipped when the stored _as_of or
-- decay_ts is later than its as_of. Numbers compare as doubles (exact up to 2^53).
-- Applied: unknown state fields are deleted, the rest written (one HSET).
--
-- Returns a flat array: applied (1/0), previous segment_id (or nil), for each key.

local STATE_FIELDS = { "@STATE_FIELDS@" }  -- filled in from state/keys.py at load time
local NSTATE = #STATE_FIELDS

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
  local ts = tonumber(r[4])
  local cur
  local apply
  if kind == "a" then
    cur = redis.call("HMGET", key, "segment_id", r[2], "_as_of")
    apply = not ((cur[2] and tonumber(cur[2]) >= tonumber(r[3])) or (cur[3] and ts <= tonumber(cur[3])))
  elseif kind == "s" then
    cur = redis.call("HMGET", key, "segment_id", "_as_of", "decay_ts")
    apply = not ((cur[2] and tonumber(cur[2]) > ts) or (cur[3] and tonumber(cur[3]) > ts))
  else
    return redis.error_reply("segstream guarded_write: unknown record kind " .. tostring(kind))
  end
  if apply then
    local set = { "segment_id", r[5], "segment_name", r[6], "model_version", r[7], "updated_at", r[8] }
    if kind == "a" then
      set[9] = r[2]
      set[10] = r[3]
    else
      set[9] = "_as_of"
      set[10] = r[4]
    end
    local del = {}
    for j = 1, NSTATE do
      local v = r[8 + j]
      if v then
        set[#set + 1] = STATE_FIELDS[j]
        set[#set + 1] = v
      else
        del[#del + 1] = STATE_FIELDS[j]
      end
    end
    if #del > 0 then
      redis.call("HDEL", key, unpack(del))
    end
    redis.call("HSET", key, unpack(set))
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
