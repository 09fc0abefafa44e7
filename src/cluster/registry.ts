/**
 * The cluster's registry, kept in the shared store (Redis or PostgreSQL): which nodes are alive
 * (a lease per node incarnation, judged by the store's own clock) and which node owns each
 * session (the record's owner and fence, ../stores/store.ts). The store is the only judge:
 * there is no view of the cluster that nodes must agree on (../../../shared/DESIGN.md, "Many
 * machines"; Orleans' grain directory with compare-and-set).
 *
 * An owner string names one incarnation of one node (`<nodeId>#<incarnation>`): a node takes a
 * new incarnation at every start and whenever it lost its lease, and a lost incarnation never
 * comes back (its lease cannot be renewed once gone), so whatever it owned is claimable.
 */
import type { SessionRecord } from '../stores/store.ts';

/** One node incarnation's lease: what other nodes need to forward to it. */
export interface NodeLease {
  /** `<nodeId>#<incarnation>`: what session records name as their owner. */
  owner: string;
  /** cluster.nodeId, for logs, the routing cookie and the admin view. */
  nodeId: string;
  /** The node's private listener (cluster.advertise), where requests for its sessions are forwarded. */
  url: string;
}

/** The answer to a claim: one store call, atomic in the store. */
export type ClaimAnswer =
  /**
   * The session is this owner's now: it was unowned (owner null), its owner's lease is gone, or
   * it was this owner's already. `record` is the record as stored after the claim (its owner is
   * the claimer, its fence raised by one when the owner changed), memento included.
   */
  | {
      kind: 'ours';
      record: SessionRecord;
      /** When this claim took the session over: the owner whose lease was gone. Absent otherwise. */
      from?: string;
    }
  /** Another owner whose lease is alive holds it: forward there. */
  | { kind: 'elsewhere'; lease: NodeLease }
  /** No record (never stored, closed, expired and swept): the caller decides, nothing is written. */
  | { kind: 'missing' };

export interface OwnerRegistry {
  /**
   * Takes a lease for a new incarnation, alive for `ttlMs` from when the store applies it.
   * Resolves false (writing nothing) when a lease of that owner exists already.
   */
  acquire(lease: NodeLease, ttlMs: number): Promise<boolean>;
  /**
   * Extends the lease to `ttlMs` from when the store applies it. Resolves false when it is gone
   * (expired or released): that incarnation is over and never renewed again.
   */
  renew(owner: string, ttlMs: number): Promise<boolean>;
  /** Deletes the lease (a drained node, last step): its sessions are claimable at once. */
  release(owner: string): Promise<void>;
  /** The leases alive now, in no particular order. */
  nodes(): Promise<NodeLease[]>;
  /** The lease of `owner` if it is alive. */
  lease(owner: string): Promise<NodeLease | undefined>;
  /**
   * Claim or locate in one atomic store step: makes `owner` the owner of session `id` when the
   * record is unowned or its owner's lease is gone (owner set, fence + 1, nothing else changed),
   * or says which live owner holds it. The memento is returned with an 'ours' answer so a resume
   * needs no second read.
   */
  claim(id: string, owner: string): Promise<ClaimAnswer>;
  /** Who holds session `id` (its live owner's lease), without claiming; undefined when unowned, owned by a lost incarnation, or missing. */
  locate(id: string): Promise<NodeLease | undefined>;
}
