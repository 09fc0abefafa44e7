/**
 * The Lua scripts of the Redis registry (./redis-registry.ts). Keys, for the store's prefix P:
 * P lease:<owner> (string: the lease as JSON, with Redis's own PX expiry: Redis's clock judges
 * it), P leases (set: the owners that took a lease, pruned of those whose key is gone, so that
 * listing the nodes never scans the database), and the records of the store (P s:<id>, see
 * src/stores/redis-scripts.ts). A lease key that is not a string is no lease.
 */
import { script } from '../stores/redis-scripts.ts';

/**
 * The lease operations, chosen by ARGV[1]; each is one atomic step.
 *   acquire: KEYS lease, leases; ARGV op, lease JSON, ttl ms, owner → 1 | 0
 *   renew:   KEYS lease;         ARGV op, ttl ms → 1 | 0 (PEXPIRE: a gone key is never brought back)
 *   release: KEYS lease, leases; ARGV op, owner → 1
 *   get:     KEYS lease;         ARGV op → the JSON | false
 *   nodes:   KEYS leases;        ARGV op, lease key prefix → the live leases' JSON
 */
export const LEASE = script(`
local op = ARGV[1]
local function isLease(key) return redis.call('TYPE', key).ok == 'string' end
if op == 'acquire' then
  local kind = redis.call('TYPE', KEYS[2]).ok
  if kind ~= 'none' and kind ~= 'set' then return redis.error_reply('WRONGTYPE the key ' .. KEYS[2] .. ' is not a set: nothing written') end
  -- The first write is SET, which Redis refuses when out of memory (see WRITE_SCRIPT's put).
  if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return 0 end
  redis.call('SADD', KEYS[2], ARGV[4])
  return 1
elseif op == 'renew' then
  if not isLease(KEYS[1]) then return 0 end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif op == 'release' then
  redis.call('DEL', KEYS[1])
  if redis.call('TYPE', KEYS[2]).ok == 'set' then redis.call('SREM', KEYS[2], ARGV[2]) end
  return 1
elseif op == 'get' then
  if not isLease(KEYS[1]) then return false end
  return redis.call('GET', KEYS[1])
elseif op == 'nodes' then
  if redis.call('TYPE', KEYS[1]).ok ~= 'set' then return {} end
  local live = {}
  for _, owner in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local key = ARGV[2] .. owner
    if isLease(key) then live[#live + 1] = redis.call('GET', key) else redis.call('SREM', KEYS[1], owner) end
  end
  return live
end
return redis.error_reply('unknown op ' .. tostring(op))
`);

/**
 * Claim or locate one record in one atomic step. KEYS: the record. ARGV: op ('claim' |
 * 'locate'), the claimer (claim only), the lease key prefix. Replies, as arrays:
 *   { 'missing' }                 no record
 *   { 'damaged' }                 the key is not a hash (nothing written)
 *   { 'damaged', fields }         a hash whose owner or fence is not one (nothing written)
 *   { 'ours', fields }            the claimer's: the hash after the claim (HGETALL)
 *   { 'elsewhere', lease, owner } a live owner's lease JSON (locate too)
 *   { 'none' }                    locate: unowned or its owner's lease is gone
 * A claim changes only owner and fence (HINCRBY: exact 64-bit integers), so the indexes and
 * the record's expiry stay as they are.
 */
export const CLAIM = script(`
local record, op, claimer, leasePrefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local kind = redis.call('TYPE', record).ok
if kind == 'none' then return { 'missing' } end
if kind ~= 'hash' then return { 'damaged' } end
local owner = redis.call('HGET', record, 'owner')
local function liveLease()
  if not owner then return false end
  local key = leasePrefix .. owner
  if redis.call('TYPE', key).ok ~= 'string' then return false end
  return redis.call('GET', key)
end
if op == 'locate' then
  local lease = liveLease()
  if lease then return { 'elsewhere', lease, owner } end
  return { 'none' }
end
if owner == claimer then return { 'ours', redis.call('HGETALL', record) } end
local lease = liveLease()
if lease then return { 'elsewhere', lease, owner } end
local fence = redis.call('HGET', record, 'fence')
-- Only a fence HINCRBY takes (no sign, no leading zero) and JavaScript reads exactly.
if owner == '' or not fence or #fence > 15 or not (fence == '0' or string.match(fence, '^[1-9]%d*$')) then
  return { 'damaged', redis.call('HGETALL', record) }
end
-- The first write is HINCRBY, which Redis refuses when out of memory (see WRITE_SCRIPT's put).
redis.call('HINCRBY', record, 'fence', 1)
redis.call('HSET', record, 'owner', claimer)
return { 'ours', redis.call('HGETALL', record), owner or '' }
`);
