/**
 * The cluster on the main thread (cluster.enabled): the private listener's port, this node's
 * lease (./lease.ts), the registry calls the edge threads make (claims go to the store from
 * here, where its one connection is), and the two moments the whole node acts: a lost lease
 * (every thread lets its contexts go, then the node rejoins under a new incarnation) and the
 * drain at shutdown (every context is suspended and released by the threads first; the lease
 * is deleted last, so the node's sessions are claimable at once).
 */
import type { ResidentConfig } from '../config.ts';
import { ResidentError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { ContextStore } from '../stores/store.ts';
import { LeaseKeeper } from './lease.ts';
import { openRegistry } from './open-registry.ts';
import { holdPrivatePort, type PortHold } from './private-port.ts';
import type { OwnerRegistry } from './registry.ts';
import { USER_LOCK_NODE, runRegistryCall, type RegistryCall } from './remote-registry.ts';
import type { ClusterControl, ClusterSetup } from './thread-side.ts';

/** How the node reaches its edge threads. */
export interface ClusterThreads {
  broadcast(call: ClusterControl, timeoutMs: number): Promise<unknown>;
}

export class ClusterNode {
  readonly registry: OwnerRegistry;
  readonly keeper: LeaseKeeper;
  readonly #config: ResidentConfig['cluster'];
  readonly #port: PortHold;
  readonly #reusePort: boolean;

  private constructor(config: ResidentConfig['cluster'], registry: OwnerRegistry, keeper: LeaseKeeper, port: PortHold, reusePort: boolean) {
    this.#config = config;
    this.registry = registry;
    this.keeper = keeper;
    this.#port = port;
    this.#reusePort = reusePort;
  }

  /** Opens the registry on the store and takes the first lease; fails with RESIDENT_ERR_LISTEN or RESIDENT_ERR_STORE_OPEN. */
  static async start(config: ResidentConfig['cluster'], store: ContextStore, log: Logger, reusePort: boolean): Promise<ClusterNode> {
    const port = await holdPrivatePort(config.port, config.host, reusePort);
    const advertise = config.advertise ?? `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port.port}`;
    const registry = openRegistry(store);
    const keeper = new LeaseKeeper(registry, { nodeId: config.nodeId, url: advertise }, config.leaseTimeout, log);
    try {
      await keeper.start();
    } catch (error) {
      await port.release();
      throw new ResidentError('RESIDENT_ERR_STORE_OPEN', `Cannot take the cluster lease of node ${config.nodeId}: ${(error as Error).message}`, { cause: error });
    }
    log.info({ event: 'cluster-joined', owner: keeper.owner, advertise }, `node ${config.nodeId} joined the cluster`);
    return new ClusterNode(config, registry, keeper, port, reusePort);
  }

  /** What each edge thread is given. */
  setup(): ClusterSetup {
    return { lease: this.keeper.view.buffer, privatePort: this.#port.port, reusePort: this.#reusePort };
  }

  /**
   * The edge threads are up and listen on the private port: the main thread's hold on it goes
   * (./private-port.ts), and from now on a lost lease makes every thread let its contexts go
   * before the node rejoins.
   */
  async attach(threads: ClusterThreads): Promise<void> {
    await this.#port.release();
    // The threads get up to a lease to save what the store still lets this node write.
    const deadlineMs = this.#config.leaseTimeout;
    this.keeper.onLost = async () => void (await threads.broadcast({ op: 'relinquish', deadlineMs }, deadlineMs + 1_000));
  }

  answer(call: RegistryCall): Promise<unknown> {
    return runRegistryCall(this.registry, call);
  }

  serving(): boolean {
    return this.keeper.view.serving();
  }

  /** The admin view's cluster page: this node and every node alive in the store. */
  async describe(): Promise<unknown> {
    const nodes = (await this.registry.nodes()).filter((lease) => lease.nodeId !== USER_LOCK_NODE);
    return { node: this.#config.nodeId, owner: this.keeper.owner, serving: this.serving(), nodes: nodes.sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1)) };
  }

  /** After the drain: the lease goes last (`release`), or lapses on its own after a failed shutdown. */
  async stop(release: boolean): Promise<void> {
    await this.#port.release();
    await this.keeper.stop(release);
  }
}
