/**
 * Ownership in a cluster (../sessions/ownership.ts has the contract): the store decides. A claim
 * is one store call that makes this node the owner (the record unowned, or its owner's lease
 * gone) or names the owner; every write of a record is conditional on the owner and fence this
 * node last saw, so once another node has taken a session, nothing this node still holds of it
 * (a checkpoint of a paused process, a late suspend) can overwrite it (Kleppmann's fencing
 * token, checked by the store itself).
 *
 * Runs on each edge thread, for the sessions homed there: `#held` is what the store holds for
 * each session this thread claimed or wrote, the condition of its next write.
 */
import { ResidentError } from '../errors.ts';
import type { SessionCounters } from '../sessions/counters.ts';
import { ElsewhereSignal, type Elsewhere, type Ownership, type Placement } from '../sessions/ownership.ts';
import type { ContextStore, OwnerFence, SessionRecord } from '../stores/store.ts';
import type { LeaseView } from './lease-view.ts';
import type { ThreadRegistry } from './remote-registry.ts';
import type { ClusterPeers } from './peer-calls.ts';

/**
 * Claims one thread has in flight at most: when a node dies, the next requests of all its
 * sessions come at once, and their claims queue here rather than stampede the store (each
 * waits its turn within the request's store deadline).
 */
const MAX_CLAIMS_IN_FLIGHT = 32;

/** The counters a claim and a refused write add to. */
type ClusterCounters = Pick<SessionCounters, 'claims' | 'takeovers' | 'fencedWrites'>;

export class ClusterOwnership implements Ownership {
  readonly recordsEverySession = true;
  readonly #registry: ThreadRegistry;
  readonly #store: ContextStore;
  readonly #lease: LeaseView;
  readonly #counters: ClusterCounters;
  readonly #held = new Map<string, OwnerFence>();
  readonly #peers: ClusterPeers;
  #inFlight = 0;
  readonly #waiting: Array<() => void> = [];
  /** This node's incarnation (`<nodeId>#<incarnation>`): what its claims write as owner. */

  constructor(deps: { registry: ThreadRegistry; store: ContextStore; lease: LeaseView; counters: ClusterCounters; peers: ClusterPeers }) {
    this.#peers = deps.peers;
    this.#registry = deps.registry;
    this.#store = deps.store;
    this.#lease = deps.lease;
    this.#counters = deps.counters;
  }

  /**
   * The incarnation new claims are written under (read from the lease view: a new one after a
   * lost lease). What was held under an older one keeps its condition, so a write lands only
   * where nobody took over.
   */
  get owner(): string {
    return this.#lease.owner();
  }

  serving(): boolean {
    return this.#lease.serving();
  }

  async claim(id: string, fresh?: () => SessionRecord): Promise<Placement> {
    // A node whose lease may have run out claims nothing: another may own everything by now.
    if (!this.serving()) throw new ResidentError('RESIDENT_ERR_NO_LEASE');
    const owner = this.owner;
    if (fresh) {
      // A new ID (122 random bits): nobody can hold it, so this write from nothing lands.
      if (!(await this.#store.setIf({ ...fresh(), owner, fence: 1 }, null))) {
        throw new ResidentError('RESIDENT_ERR_STORE_FAILED', 'a new session ID was already stored');
      }
      if (!this.serving() || this.owner !== owner) throw new ResidentError('RESIDENT_ERR_NO_LEASE');
      this.#held.set(id, { owner, fence: 1 });
      return { kind: 'ours', fence: 1 };
    }
    const answer = await this.#limited(() => this.#registry.claim(id, owner));
    if (answer.kind === 'missing') {
      this.#held.delete(id);
      return answer;
    }
    if (answer.kind === 'elsewhere') {
      this.#held.delete(id);
      return { kind: 'elsewhere', owner: answer.lease.owner, url: answer.lease.url };
    }
    // The lease ran out or was replaced while the claim was under way: the claim names an
    // incarnation that may be lost, which any node can claim back, so nothing is served on it.
    if (!this.serving() || this.owner !== owner) throw new ResidentError('RESIDENT_ERR_NO_LEASE');
    const { record } = answer;
    const before = this.#held.get(id);
    if (!before || before.owner !== owner || before.fence !== record.fence) {
      this.#counters.claims++;
      // Taken from an owner whose lease is gone (not from nobody, and not this incarnation's own).
      if (answer.from) this.#counters.takeovers++;
    }
    this.#held.set(id, { owner, fence: record.fence });
    return { kind: 'ours', fence: record.fence, record };
  }

  async save(record: SessionRecord, leaving: boolean): Promise<void> {
    const held = this.#held.get(record.id);
    if (!held) {
      // A record under an ID this node never stored (a regenerate's move): claimed from nothing.
      const fresh = { ...record, owner: leaving ? null : this.owner, fence: 1 };
      if (!(await this.#store.setIf(fresh, null))) this.#refused(record.id);
      this.#held.set(record.id, { owner: fresh.owner, fence: 1 });
      return;
    }
    // Leaving lets the session go in the same write: any node may claim it next.
    const next: OwnerFence = leaving && held.owner !== null ? { owner: null, fence: held.fence + 1 } : held;
    if (!(await this.#store.setIf({ ...record, owner: next.owner, fence: next.fence }, held))) this.#refused(record.id);
    this.#held.set(record.id, next);
  }

  async remove(id: string): Promise<void> {
    let held = this.#held.get(id);
    if (!held) {
      // A record this node holds nothing of (an admin close, an expired record): claimed first,
      // so that a session live on another node is never deleted under it.
      const placement = await this.claim(id);
      if (placement.kind === 'missing') return;
      if (placement.kind === 'elsewhere') throw new ElsewhereSignal(placement);
      held = this.#held.get(id)!;
    }
    this.#held.delete(id);
    if (await this.#store.deleteIf(id, held)) return;
    // Refused: gone already (fine), or another node holds it now.
    if ((await this.#store.existing([id])).has(id)) this.#refused(id);
  }

  async release(id: string): Promise<void> {
    const held = this.#held.get(id);
    if (!held) return;
    this.#held.delete(id);
    // A session that ends without its record deleted yet (an unproven one dropped): the record
    // its claim wrote goes, unless another node holds it now.
    await this.#store.deleteIf(id, held).catch(() => undefined);
  }

  closeAt(placement: Elsewhere, id: string, by: string): Promise<boolean> {
    return this.#peers.close(placement.url, id, by);
  }

  async #limited<T>(call: () => Promise<T>): Promise<T> {
    while (this.#inFlight >= MAX_CLAIMS_IN_FLIGHT) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#inFlight++;
    try {
      return await call();
    } finally {
      this.#inFlight--;
      this.#waiting.shift()?.();
    }
  }

  #refused(id: string): never {
    this.#held.delete(id);
    this.#counters.fencedWrites++;
    throw new ResidentError('RESIDENT_ERR_FENCED', `session ${id.slice(0, 4)}… is owned by another node now`);
  }
}
