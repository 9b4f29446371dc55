-- segstream key schema v1: guarded writes of customer hashes (see docs/redis-schema.md).
--
-- KEYS: customer hashes. The store calls this with ONE key per call by default, so that
-- the script touches a single hash slot (Redis Cluster). Several keys per call are allowed
-- only when the caller knows they share a slot (or the server is not a cluster).
--
-- ARGV[1] = TTL in seconds (0 = none)
-- ARGV[2] = MessagePack array of records, one per key, in KEYS order. A record is
--   { kind, ts, n, <n fields to delete>..., guard field, guard value, version field,
--     expected version, <field, value pairs>... }
--   kind "a": an online update; ts = time of the last event applied; the guard pair is
--             _p<partition>, <offset> of that event.
--   kind "s": an offline seed; ts = its snapshot time as_of; the guard pair is _as_of, ts.
--   expected version "" = a full record; otherwise the pairs are a diff against the record
--   whose version field held exactly that value, and are applied only onto that record.
--
-- An update is skipped when the stored offset of its partition is >= its offset, or its
-- event time is <= the stored _as_of. A seed is skipped when the stored _as_of or
-- decay_ts is later than its as_of. Numbers compare as doubles (exact up to 2^53).
-- Applied: the listed fields (values now unknown) are deleted, the pairs written, the
-- version field set to the stored version + 1, or to the server time in microseconds when
-- there is none: a hash deleted and written again never repeats an earlier version (each
-- write takes more than a microsecond; exact as a double below 2^53). A seed that would change nothing (a re-run
-- of the same publish) writes nothing and keeps the version; only the TTL is renewed.
--
-- Returns a flat array, three entries per key: status (1 applied, 0 skipped, 2 not
-- applied because the diff's expected version is not the stored one: resend in full),
-- previous segment_id (or nil), the version now stored (or nil).

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
    cur = redis.call("HMGET", key, "segment_id", r[first], "_as_of", r[first + 2])
    apply = not ((cur[2] and tonumber(cur[2]) >= tonumber(r[first + 1])) or (cur[3] and ts <= tonumber(cur[3])))
  elseif kind == "s" then
    cur = redis.call("HMGET", key, "segment_id", "_as_of", "decay_ts", r[first + 2])
    apply = not ((cur[2] and tonumber(cur[2]) > ts) or (cur[3] and tonumber(cur[3]) > ts))
  else
    return redis.error_reply("segstream guarded_write: unknown record kind " .. tostring(kind))
  end
  local status = 0
  local version = cur[4]
  local same = false
  if apply and kind == "s" and cur[4] then
    local names = {}
    for i = first + 4, #r, 2 do
      names[#names + 1] = r[i]
    end
    local got = redis.call("HMGET", key, r[first], unpack(names))
    same = got[1] == r[first + 1]
    for i = 1, #names do
      same = same and got[i + 1] == r[first + 3 + 2 * i]
    end
    if same and ndel > 0 then
      for _, v in ipairs(redis.call("HMGET", key, unpack(r, 4, first - 1))) do
        same = same and not v
      end
    end
  end
  if same then
    if ttl > 0 then
      redis.call("EXPIRE", key, ttl)
    end
    status = 1
  elseif apply then
    local expect = r[first + 3]
    if expect ~= "" and expect ~= cur[4] then
      status = 2
    else
      if cur[4] then
        version = tonumber(cur[4]) + 1
      else  -- a new hash (or one deleted or expired): start at the server clock in microseconds
        local now = redis.call("TIME")
        version = tonumber(now[1]) * 1000000 + tonumber(now[2])
      end
      r[first + 3] = string.format("%d", version)
      if ndel > 0 then
        redis.call("HDEL", key, unpack(r, 4, first - 1))
      end
      redis.call("HSET", key, unpack(r, first))
      if ttl > 0 then
        redis.call("EXPIRE", key, ttl)
      end
      status = 1
    end
  end
  out[k * 3 - 2] = status
  out[k * 3 - 1] = cur[1]
  out[k * 3] = version
end
return out
