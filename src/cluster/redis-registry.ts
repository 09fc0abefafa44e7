/**
 * The OwnerRegistry on the Redis store (../stores/redis.ts): leases are keys with Redis's own
 * expiry, and a claim is one Lua script that reads the record's owner, looks up that owner's
 * lease and writes the new owner and fence in the same atomic step (./redis-registry-scripts.ts).
 * Every call goes through the store's connection and script runner: bounded by callTimeout, sent
 * again in call order after a NOSCRIPT.
 */
import { ResidentError } from '../errors.ts';
import type { RedisAccess, RedisStore } from '../stores/redis.ts';
import { checkLease, checkOwner, checkTtl, damagedLease, isNodeLease, leaseOf } from './lease-check.ts';
import type { ClaimAnswer, NodeLease, OwnerRegistry } from './registry.ts';
import { CLAIM, LEASE } from './redis-registry-scripts.ts';

type ClaimReply = ['missing'] | ['damaged', string[]?] | ['ours', string[], string?] | ['elsewhere', string, string] | ['none'];

export class RedisRegistry implements OwnerRegistry {
  readonly #redis: RedisAccess;

  constructor(store: RedisStore) {
    this.#redis = store.registryAccess();
  }

  #leaseKey(owner: string): string {
    return `${this.#redis.prefix}lease:${owner}`;
  }

  get #leases(): string {
    return `${this.#redis.prefix}leases`;
  }

  async acquire(lease: NodeLease, ttlMs: number): Promise<boolean> {
    checkLease(lease);
    checkTtl(ttlMs);
    const keys = [this.#leaseKey(lease.owner), this.#leases];
    return (await this.#redis.run<number>('acquire', LEASE, keys, ['acquire', JSON.stringify(leaseOf(lease)), String(ttlMs), lease.owner])) === 1;
  }

  async renew(owner: string, ttlMs: number): Promise<boolean> {
    checkOwner(owner);
    checkTtl(ttlMs);
    return (await this.#redis.run<number>('renew', LEASE, [this.#leaseKey(owner)], ['renew', String(ttlMs)])) === 1;
  }

  async release(owner: string): Promise<void> {
    checkOwner(owner);
    await this.#redis.run('release', LEASE, [this.#leaseKey(owner), this.#leases], ['release', owner]);
  }

  async nodes(): Promise<NodeLease[]> {
    const found = await this.#redis.run<string[]>('nodes', LEASE, [this.#leases], ['nodes', this.#leaseKey('')]);
    // A damaged lease is no node to forward to; it expires by itself or is overwritten by nobody.
    return found.flatMap((text) => {
      const lease = parse(text);
      return lease ? [lease] : [];
    });
  }

  async lease(owner: string): Promise<NodeLease | undefined> {
    checkOwner(owner);
    const text = await this.#redis.run<string | null>('lease', LEASE, [this.#leaseKey(owner)], ['get']);
    const lease = typeof text === 'string' ? parse(text) : undefined;
    return lease?.owner === owner ? lease : undefined;
  }

  async claim(id: string, owner: string): Promise<ClaimAnswer> {
    checkOwner(owner);
    const reply = await this.#redis.run<ClaimReply>('claim', CLAIM, [this.#redis.recordKey(id)], ['claim', owner, this.#leaseKey('')]);
    switch (reply[0]) {
      case 'missing':
        return { kind: 'missing' };
      case 'elsewhere':
        return { kind: 'elsewhere', lease: forwardTo(reply[1], reply[2]) };
      case 'ours':
      case 'damaged': {
        // A damaged record is quarantined as the store's get does, and reads as none.
        const record = await this.#redis.record(id, reply[1] ?? false);
        if (record === undefined) return { kind: 'missing' };
        // A takeover names the owner whose lease was gone (empty: the record was unowned).
        const from = reply[0] === 'ours' ? reply[2] : undefined;
        if (reply[0] === 'ours' && record.owner === owner) return from ? { kind: 'ours', record, from } : { kind: 'ours', record };
        throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `Redis claim: the record's owner or fence cannot be claimed (${JSON.stringify(record.owner)}, ${record.fence})`);
      }
      default:
        throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `Redis claim: unexpected reply ${JSON.stringify(reply)}`);
    }
  }

  async locate(id: string): Promise<NodeLease | undefined> {
    const reply = await this.#redis.run<ClaimReply>('locate', CLAIM, [this.#redis.recordKey(id)], ['locate', '', this.#leaseKey('')]);
    if (reply[0] !== 'elsewhere') return undefined;
    const lease = parse(reply[1]);
    return lease?.owner === reply[2] ? lease : undefined;
  }
}

/** The live owner's lease to forward to; one that does not name that owner is damaged. */
function forwardTo(text: string, owner: string): NodeLease {
  const lease = parse(text);
  if (lease?.owner !== owner) throw damagedLease(owner, 'Redis claim');
  return lease;
}

function parse(text: string): NodeLease | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return isNodeLease(value) ? leaseOf(value) : undefined;
  } catch {
    return undefined;
  }
}
