/**
 * Probes for orchestrators and load balancers. /healthz: the process answers (liveness).
 * /readyz: every worker thread is up and the store answers (readiness); 503 otherwise.
 *
 * The store is not pinged per probe: a ping writes (SQLite: a synchronous write on this
 * thread; file store: a probe file, fsynced), so an anonymous client looping on /readyz would
 * stall every request, and a hung store would collect one unfinished ping per probe. A
 * StoreProbe pings in the background instead, one ping at a time, about once a second, and
 * /readyz answers from its latest result.
 *
 * During shutdown /readyz answers 503 "stopping", but shutdown() closes the listener and the
 * idle keep-alive connections at once: a new connection is refused, so only a probe sent on a
 * connection that was busy with a request when shutdown began ever sees "stopping". There is
 * no drain delay: the orchestrator takes the instance out of rotation before it signals it
 * (a Kubernetes preStop sleep; see README "Health").
 *
 * Neither creates a session or sets a cookie, and neither says more than up or down: details
 * of a failure go to the log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ContextPool } from '../contexts/pool.ts';
import type { RequestTarget } from '../http/target.ts';
import type { Logger } from '../log.ts';
import type { ContextStore } from '../stores/store.ts';
import { sendJson, type OpsRoute } from './respond.ts';

/** How often the store is pinged while the server runs. */
const PING_INTERVAL_MS = 1_000;
/** A ping not settled within this is a failure (RELIABILITY.md E6: bounded time). */
const PING_TIMEOUT_MS = 1_000;
/** A result older than this says nothing about now (the pinger stalled): not ready. */
const RESULT_MAX_AGE_MS = 3_000;

/**
 * Pings the store in the background and keeps the latest result. Never two pings at once: a
 * ping that misses its deadline counts as a failure, and no other starts until it settles.
 * An outage is logged when it begins and when it ends, not once per ping.
 */
export class StoreProbe {
  readonly #store: ContextStore;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  /** When the ping under way started (performance.now()), until the store settles it. */
  #pingStarted: number | undefined;
  #latest: { at: number; error: string | null } | undefined;
  #stopped = false;

  constructor(store: ContextStore, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  /** Pings once (so the first probe has an answer), then about once a second until stop(). */
  async start(): Promise<void> {
    this.#timer = setInterval(() => void this.#ping(), PING_INTERVAL_MS);
    this.#timer.unref();
    await this.#ping();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  /** null when the store answered recently; otherwise why not (for the log). */
  failure(now = performance.now()): string | null {
    if (this.#pingStarted !== undefined && now - this.#pingStarted > PING_TIMEOUT_MS) return 'a ping is still pending';
    if (!this.#latest) return 'not pinged yet';
    if (now - this.#latest.at > RESULT_MAX_AGE_MS) return `no ping result for ${Math.round(now - this.#latest.at)} ms`;
    return this.#latest.error;
  }

  /** Resolves with the ping's outcome, or at its deadline; starts nothing while one is under way. */
  #ping(): Promise<void> {
    if (this.#pingStarted !== undefined || this.#stopped) return Promise.resolve();
    const started = performance.now();
    this.#pingStarted = started;
    let ping: Promise<void>;
    try {
      ping = this.#store.ping();
    } catch (error) {
      ping = Promise.reject(error);
    }
    return new Promise<void>((resolve) => {
      let settled = false;
      const settle = (error: string | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        this.#record(error);
        resolve();
      };
      const deadline = setTimeout(() => settle(`the store ping did not settle within ${PING_TIMEOUT_MS} ms`), PING_TIMEOUT_MS);
      deadline.unref();
      ping.then(
        () => settle(null),
        (error: unknown) => settle((error instanceof Error && error.message) || 'unreachable'),
      ).finally(() => {
        if (this.#pingStarted === started) this.#pingStarted = undefined;
      });
    });
  }

  #record(error: string | null): void {
    const wasDown = this.#latest !== undefined && this.#latest.error !== null;
    this.#latest = { at: performance.now(), error };
    if (this.#stopped) return;
    if (error !== null && !wasDown) this.#log.error({ event: 'store-unreachable', err: { type: 'Error', message: error } }, 'readiness: the store does not answer');
    if (error === null && wasDown) this.#log.info({ event: 'store-reachable' }, 'readiness: the store answers again');
  }
}

export interface HealthSources {
  pool: ContextPool;
  storeKind: string;
  probe: StoreProbe;
  stopping: () => boolean;
  /** The cluster: this node holds a lease it may serve under, and its node ID (absent on one node). */
  cluster?: { serving: () => boolean; nodeId: string; owner: () => string };
}

export function healthRoutes(sources: HealthSources): OpsRoute {
  const claims = (path: string) => path === '/healthz' || path === '/readyz';
  const handle = async ({ path }: RequestTarget, _req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (path === '/healthz') return sendJson(res, 200, { status: 'ok' });
    const { pool } = sources;
    // A tripped crash-loop breaker is not ready even with every thread up: the last
    // replacement may have started before it tripped, and none will start after.
    const workers = { up: pool.threadIds.length, expected: pool.size, ...(pool.degraded ? { crashLoop: true } : {}) };
    const storeOk = sources.probe.failure() === null;
    const stopping = sources.stopping();
    const { cluster } = sources;
    const leased = cluster ? cluster.serving() : true;
    const ready = !stopping && workers.up === workers.expected && !pool.degraded && storeOk && leased;
    sendJson(res, ready ? 200 : 503, {
      status: ready ? 'ready' : stopping ? 'stopping' : 'not ready',
      workers,
      store: { kind: sources.storeKind, status: storeOk ? 'ok' : 'unreachable' },
      ...(cluster && { cluster: { node: cluster.nodeId, owner: cluster.owner(), lease: leased ? 'held' : 'lost' } }),
    });
  };
  return { claims, handle };
}
