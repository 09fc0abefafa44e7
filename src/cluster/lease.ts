/**
 * This node's lease, on the main thread: taken at start under a new incarnation, renewed every
 * third of cluster.leaseTimeout, and published to the edge threads (./lease-view.ts) as the time
 * until which they may serve: the send time of the last renewal the store confirmed, plus the
 * lease, minus a margin. The store starts the lease's time when it applies the renewal, which is
 * after it was sent, so the node stops serving before the store can give its sessions away,
 * even if its clock runs a little fast (the margin) (../../../shared/DESIGN.md, "Node lease").
 *
 * A renewal the store refuses means the lease is gone (it expired while this node was paused
 * or cut off): that incarnation is over for good. The keeper tells its owner (`onLost`), which
 * lets every context go and then takes a new incarnation.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { LeaseView } from './lease-view.ts';
import type { NodeLease, OwnerRegistry } from './registry.ts';

/** A new incarnation's name: never the same twice, in time order for people reading logs. */
export function newOwner(nodeId: string): string {
  return `${nodeId}#${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

export class LeaseKeeper {
  readonly view = new LeaseView();
  readonly #registry: OwnerRegistry;
  readonly #ttl: number;
  readonly #margin: number;
  readonly #log: Logger;
  #lease: NodeLease;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #renewing = false;
  /** Called once per lost incarnation; resolves with nothing, the keeper takes a new one after. */
  onLost: (lost: string) => Promise<void> = async () => {};

  constructor(registry: OwnerRegistry, lease: Omit<NodeLease, 'owner'>, ttlMs: number, log: Logger) {
    this.#registry = registry;
    this.#ttl = ttlMs;
    // A fifth of the lease (at least 500 ms): what this node's clock may run ahead of the store's.
    this.#margin = Math.max(500, ttlMs / 5);
    this.#log = log;
    this.#lease = { ...lease, owner: newOwner(lease.nodeId) };
  }

  get owner(): string {
    return this.#lease.owner;
  }

  get lease(): Readonly<NodeLease> {
    return this.#lease;
  }

  /** Takes the first lease; rejects when the store refuses it (startup stops). */
  async start(): Promise<void> {
    const until = await this.#acquire();
    this.view.publish(this.#lease.owner);
    this.view.serveUntil(until);
    this.#schedule();
  }

  /** Takes the lease of this.#lease; resolves with the time this node may serve until. */
  async #acquire(): Promise<number> {
    const sent = LeaseView.now();
    if (!(await this.#registry.acquire(this.#lease, this.#ttl))) throw new Error(`the lease of ${this.#lease.owner} exists already`);
    return sent + this.#ttl - this.#margin;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#renew(), this.#ttl / 3);
  }

  async #renew(): Promise<void> {
    if (this.#stopped || this.#renewing) return;
    this.#renewing = true;
    try {
      const sent = LeaseView.now();
      if (await this.#registry.renew(this.#lease.owner, this.#ttl)) {
        if (!this.#stopped) this.view.serveUntil(sent + this.#ttl - this.#margin);
      } else {
        await this.#lost();
      }
    } catch (error) {
      // The store did not answer: the node serves until its last confirmed renewal runs out,
      // and tries again; it stops serving on its own if the store stays away.
      this.#log.warn({ event: 'lease-renew-failed', owner: this.#lease.owner, err: error, servingForMs: Math.max(0, Math.round(this.view.until - LeaseView.now())) }, 'cannot renew the cluster lease');
    } finally {
      this.#renewing = false;
      this.#schedule();
    }
  }

  async #lost(): Promise<void> {
    const lost = this.#lease.owner;
    this.view.serveUntil(0);
    this.#log.error({ event: 'lease-lost', owner: lost }, 'the cluster lease expired in the store: this node stops serving, lets its contexts go and rejoins under a new incarnation');
    await this.onLost(lost);
    if (this.#stopped) return;
    this.#lease = { ...this.#lease, owner: newOwner(this.#lease.nodeId) };
    const until = await this.#acquire();
    // Named before it may serve: no thread claims under the lost incarnation from here on.
    this.view.publish(this.#lease.owner);
    if (!this.#stopped) this.view.serveUntil(until);
    this.#log.info({ event: 'lease-acquired', owner: this.#lease.owner }, 'rejoined the cluster under a new incarnation');
  }

  /** Stops renewing; `release` deletes the lease (a drained node's last step), so its sessions are claimable at once. */
  async stop(release: boolean): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.view.serveUntil(0);
    if (release) await this.#registry.release(this.#lease.owner);
  }
}
