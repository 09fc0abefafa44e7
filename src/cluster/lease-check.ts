/**
 * The arguments and stored leases every OwnerRegistry (./registry.ts) checks alike: a malformed
 * call is refused with a RangeError before the store sees it, and a stored lease that is not one
 * (written by someone else) is never forwarded to.
 */
import { ResidentError } from '../errors.ts';
import type { NodeLease } from './registry.ts';

/** An owner names a node incarnation: a non-empty string, as the records' owners (store.ts). */
export function checkOwner(owner: unknown): asserts owner is string {
  if (typeof owner !== 'string' || owner === '') throw new RangeError(`an owner is a non-empty string, not ${JSON.stringify(owner) ?? typeof owner}`);
}

/** A lease's time to live: whole milliseconds ≥ 1 (Redis PX takes nothing else). */
export function checkTtl(ttlMs: unknown): asserts ttlMs is number {
  if (!Number.isSafeInteger(ttlMs) || (ttlMs as number) < 1) throw new RangeError(`a lease's ttl is a whole number of milliseconds ≥ 1, not ${String(ttlMs)}`);
}

export function checkLease(lease: NodeLease): void {
  checkOwner(lease?.owner);
  if (typeof lease.nodeId !== 'string' || lease.nodeId === '' || typeof lease.url !== 'string' || lease.url === '') {
    throw new RangeError('a lease needs a non-empty nodeId and url');
  }
}

export function isNodeLease(value: unknown): value is NodeLease {
  const v = value as Partial<NodeLease> | null;
  return typeof v === 'object' && v !== null && typeof v.owner === 'string' && v.owner !== '' && typeof v.nodeId === 'string' && typeof v.url === 'string';
}

/** Just the three fields, whatever else the stored form held. */
export const leaseOf = ({ owner, nodeId, url }: NodeLease): NodeLease => ({ owner, nodeId, url });

/** A live owner's lease that cannot be read: the claim cannot say where to forward. */
export function damagedLease(owner: string, store: string): ResidentError {
  return new ResidentError('RESIDENT_ERR_STORE_FAILED', `${store}: the lease of ${JSON.stringify(owner)} is damaged (not a lease): cannot forward to it`);
}
