/**
 * The Lua scripts of the Redis store (src/stores/redis.ts). Every write changes the record and
 * its three indexes (all IDs, the user's IDs, expiry times) in one script, so Redis applies them
 * as one atomic step: no reader ever sees a record without its index entries or the reverse,
 * and the conditional writes check owner and fence in the same step that writes.
 *
 * Keys, for a prefix P: P s:<id> (hash: the record), P ids (sorted set, all scores 0: every ID,
 * in lexical order), P u:<userId> (the same, per user), P exp (sorted set: ID by expiresAt),
 * P q:<id> (hash: a quarantined record). Field values are decimal text; a field that is absent
 * is null (userId, memento, expiresAt, owner).
 */
import { createHash } from 'node:crypto';

/** A Lua script with its SHA-1, sent by EVALSHA. */
export interface Script {
  source: string;
  sha: string;
}

export const script = (source: string): Script => ({ source, sha: createHash('sha1').update(source).digest('hex') });

/**
 * One script for every write, chosen by ARGV[1], so that all writes of a store share one
 * script: if Redis loses its script cache, every write sent since fails alike (NOSCRIPT) and is
 * sent again in call order.
 *
 * KEYS: record, ids, exp, quarantine. ARGV: op, id, user key prefix, then per op:
 *   set:       put args
 *   delete:    (none)
 *   setIf:     mode ('absent' | 'held'), owner is null ('1' | '0'), owner, fence, then put args
 *   deleteIf:  mode, owner is null, owner, fence
 *   quarantine: reason, now
 * put args: has user ('1' | '0'), userId, expiresAt ('' for null), PEXPIREAT time, then the
 * hash's field/value pairs.
 */
export const WRITE_SCRIPT = `
local op, id, userPrefix = ARGV[1], ARGV[2], ARGV[3]
local record, ids, exp = KEYS[1], KEYS[2], KEYS[3]

-- The index keys a write of this record touches that are not sorted sets (someone else wrote
-- them), checked before the first write: Redis does not undo a script, so a WRONGTYPE midway
-- would leave half a write. newUser: the user index a put adds to, or nil.
local function misfit(newUser)
  local keys = { ids, exp }
  if redis.call('TYPE', record).ok == 'hash' then
    local oldUser = redis.call('HGET', record, 'userId')
    if oldUser then keys[#keys + 1] = userPrefix .. oldUser end
  end
  if newUser then keys[#keys + 1] = userPrefix .. newUser end
  for _, key in ipairs(keys) do
    local kind = redis.call('TYPE', key).ok
    if kind ~= 'none' and kind ~= 'zset' then return key end
  end
  return nil
end

local function holds(at)
  local mode, ownerIsNull, owner, fence = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local there = redis.call('EXISTS', record) == 1
  if mode == 'absent' then return not there end
  if not there or redis.call('TYPE', record).ok ~= 'hash' then return false end
  local stored = redis.call('HMGET', record, 'owner', 'fence')
  if ownerIsNull == '1' then
    if stored[1] then return false end
  elseif stored[1] ~= owner then
    return false
  end
  return stored[2] == fence
end

-- Takes the record out of every index (but the ID index when keepId); leaves the key itself to the caller.
local function unindex(keepId)
  if redis.call('TYPE', record).ok == 'hash' then
    local userId = redis.call('HGET', record, 'userId')
    if userId then redis.call('ZREM', userPrefix .. userId, id) end
  end
  if not keepId then redis.call('ZREM', ids, id) end
  redis.call('ZREM', exp, id)
end

local function put(at)
  -- The first write is one Redis refuses when out of memory (maxmemory with noeviction): it
  -- checks only before a script's first write and lets the rest run, so a put that began with
  -- ZREM or DEL would write past maxmemory and report success (RELIABILITY.md E4).
  redis.call('ZADD', ids, 0, id)
  unindex(true)
  redis.call('DEL', record)
  local hasUser, userId, expiresAt, deadline = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local fields = {}
  for i = at + 4, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', record, unpack(fields))
  if hasUser == '1' then redis.call('ZADD', userPrefix .. userId, 0, id) end
  if expiresAt ~= '' then
    redis.call('ZADD', exp, expiresAt, id)
    redis.call('PEXPIREAT', record, deadline)
  end
end

local putAt = ({ set = 4, setIf = 8 })[op]
local newUser = putAt and ARGV[putAt] == '1' and ARGV[putAt + 1] or nil
local wrong = misfit(newUser)
if wrong then return redis.error_reply('WRONGTYPE the index key ' .. wrong .. ' is not a sorted set: nothing written') end

if op == 'set' then
  put(4)
  return 1
elseif op == 'delete' then
  unindex()
  redis.call('DEL', record)
  return 1
elseif op == 'setIf' then
  if not holds(4) then return 0 end
  put(8)
  return 1
elseif op == 'deleteIf' then
  if not holds(4) then return 0 end
  unindex()
  redis.call('DEL', record)
  return 1
elseif op == 'quarantine' then
  local kind = redis.call('TYPE', record).ok
  local row = false
  if kind == 'hash' then
    row = cjson.encode(redis.call('HGETALL', record))
  elseif kind == 'string' then
    row = redis.call('GET', record)
  elseif kind ~= 'none' then
    row = 'a Redis ' .. kind
  end
  local moved = KEYS[4]
  local movedKind = redis.call('TYPE', moved).ok
  if movedKind ~= 'none' and movedKind ~= 'hash' then redis.call('DEL', moved) end
  -- First a write Redis refuses when out of memory, as in put: never a quarantine past maxmemory.
  redis.call('HSET', moved, 'id', id, 'reason', ARGV[4], 'quarantinedAt', ARGV[5])
  if row then redis.call('HSET', moved, 'record', row) else redis.call('HDEL', moved, 'record') end
  unindex()
  redis.call('DEL', record)
  return 1
end
return redis.error_reply('unknown op ' .. tostring(op))
`;

/** Which of KEYS exist, as 1 or 0 in KEYS order: one round trip for a whole Cookie header. */
export const EXISTING_SCRIPT = `
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('EXISTS', key) end
return found
`;

/** The hash fields a summary is made of, in the order LIST_SCRIPT returns them. */
export const SUMMARY_FIELDS = ['userId', 'mementoVersion', 'clientIp', 'createdAt', 'updatedAt', 'lastActivityAt', 'expiresAt', 'owner', 'fence'] as const;

/**
 * A page of summaries in ID order from an index (KEYS[1]: all IDs or one user's), each as
 * [id, ...SUMMARY_FIELDS, memento size in bytes]. ARGV: record key prefix, first bound for
 * ZRANGEBYLEX ('-' or '(' .. after), limit, the user ID ('' with the full index).
 *
 * An index entry whose record is gone (expired by Redis itself, see redis.ts) or now belongs to
 * another user is dropped from the index as it is met, and the page is filled from further on.
 */
export const LIST_SCRIPT = `
local index, recordPrefix, from, limit, userId = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local page = {}
while #page < limit do
  local batch = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0, limit - #page)
  if #batch == 0 then break end
  for _, id in ipairs(batch) do
    local key = recordPrefix .. id
    local kind = redis.call('TYPE', key).ok
    if kind == 'hash' then
      local fields = redis.call('HMGET', key, ${SUMMARY_FIELDS.map((f) => `'${f}'`).join(', ')})
      if userId == '' or fields[1] == userId then
        table.insert(fields, 1, id)
        fields[#fields + 1] = redis.call('HSTRLEN', key, 'memento')
        page[#page + 1] = fields
      else
        redis.call('ZREM', index, id)
      end
    elseif kind == 'none' then
      redis.call('ZREM', index, id)
    end
    from = '(' .. id
  end
end
return page
`;
