/**
 * The composition root, on the main thread: open the store, start the pool (each of its worker
 * threads becomes an HTTP edge on the server's port, src/edge/thread.ts), answer what the
 * threads ask of the main thread (store calls, log lines, health and admin requests), and shut
 * down in order. The main thread serves no request itself.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DestinationStream } from 'pino';
import type { Clock } from './clock.ts';
import type { ResidentConfig } from './config.ts';
import { ContextPool } from './contexts/pool.ts';
import { Homes, SharedCap, SlotFigures, newSharedState, slotCounters } from './contexts/shared-state.ts';
import { ResidentError } from './errors.ts';
import { SessionsView } from './edge/sessions-view.ts';
import { GuessBudget, SourceAlarms } from './sessions/index.ts';
import type { ControlCall, OpsCall } from './edge/thread.ts';
import type { LogCall } from './edge/thread-log.ts';
import { ID_HASH_SALT, createLogger, type Logger } from './log.ts';
import { assertSupportedNode } from './node-version.ts';
import { adminRoutes } from './ops/admin.ts';
import { StoreProbe, healthRoutes } from './ops/health.ts';
import { Metrics } from './ops/metrics.ts';
import { answerRelayed } from './ops/relay.ts';
import { send, type OpsRoute } from './ops/respond.ts';
import { openStore } from './stores/open.ts';
import { scheduleSweeps } from './stores/sweep-schedule.ts';
import { parseTarget } from './http/target.ts';
import { runLookupCall, runStoreCall, type LookupCall, type OverBudgetCall, type StoreCall } from './stores/remote.ts';
import type { ContextStore } from './stores/store.ts';
import { ClusterNode } from './cluster/node.ts';
import { poolStartFailure } from './contexts/start-failure.ts';
import { loggedError, toWireError } from './contexts/protocol.ts';
import type { RegistryCall } from './cluster/remote-registry.ts';

/** Platforms where node:net's reusePort lets several threads listen on one port (Node's docs). */
const REUSE_PORT_PLATFORMS = new Set(['linux', 'freebsd', 'sunos', 'aix']);

export interface StartOptions {
  config: ResidentConfig;
  /**
   * A clock tests move by hand: its time is read by every thread from shared memory, so it must
   * keep it there (`shared`). Default: the monotonic clock.
   */
  clock?: Clock & { readonly shared: SharedArrayBuffer };
  /** Where log lines go (default: stdout). */
  logDestination?: DestinationStream;
  store?: ContextStore;
}

export interface ResidentServer {
  /** http://host:port of the listening server. */
  readonly url: string;
  readonly port: number;
  /** Every thread's sessions (src/edge/sessions-view.ts). */
  readonly sessions: SessionsView;
  readonly pool: ContextPool;
  readonly log: Logger;
  /** The admin view's URL, when admin.token is set. */
  readonly adminUrl: string | null;
  /** Where Prometheus scrapes, when metrics are on. */
  readonly metricsUrl: string | null;
  readonly metrics: Metrics | null;
  /**
   * Stops accepting, finishes requests in flight, suspends every live context ('shutdown'),
   * and stops the workers. Idempotent: a second call returns the first call's promise.
   */
  shutdown(): Promise<{ suspended: number; lost: number }>;
}

export async function startServer(options: StartOptions): Promise<ResidentServer> {
  // For code that starts Resident without src/main.ts: the same refusal, as a rejection.
  assertSupportedNode();
  const log = createLogger(options.config.log, options.logDestination);
  // What each step started, undone last first when a later step fails: a failed start leaves
  // nothing listening, no worker thread and the store closed, so the CLI can exit 2 cleanly.
  const undo: Array<() => unknown> = [];
  try {
    return await start(options, log, undo);
  } catch (error) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch (cleanupError) {
        log.warn({ event: 'start-cleanup-error', err: cleanupError }, 'cleaning up after a failed start');
      }
    }
    throw error;
  }
}

async function start(options: StartOptions, log: Logger, undo: Array<() => unknown>): Promise<ResidentServer> {
  const { config } = options;
  // Every edge thread listens on the port with SO_REUSEPORT; where Node does not offer it,
  // one edge thread serves (a warning says so) rather than the server refusing to start with
  // the default configuration.
  const reusePort = REUSE_PORT_PLATFORMS.has(process.platform);
  const threads = reusePort ? config.workers.threads : 1;
  if (threads < config.workers.threads) {
    log.warn(
      { event: 'workers-reduced', configured: config.workers.threads, threads, platform: process.platform },
      `workers.threads is ${config.workers.threads}, but ${process.platform} gives Node no SO_REUSEPORT for several threads to listen on one port: one edge thread serves`,
    );
  }
  // A port some other process listens on, even with SO_REUSEPORT (a second Resident of the
  // same user), must stop this one, not silently share its connections with it.
  if (config.port !== 0) await assertPortFree(config.port, config.host);
  const { token, path: adminPath } = config.admin;
  // Only metrics something can read: under the admin path (needs the token) or on metrics.port.
  const metrics = config.metrics.enabled && (token || config.metrics.port !== undefined) ? new Metrics() : null;
  if (metrics) undo.push(() => metrics.close());
  const openedStore = options.store ?? (await openStore(config.store, log));
  const store = metrics ? metrics.instrument(openedStore) : openedStore;
  undo.push(() => store.close());
  // The cluster's lease is taken before any thread can claim a session under it.
  const cluster = config.cluster.enabled ? await ClusterNode.start(config.cluster, openedStore, log, reusePort) : null;
  undo.push(() => cluster?.stop(true));
  const shared = newSharedState(threads);
  const mainCounters = slotCounters(shared, threads);
  const cap = new SharedCap(shared, threads);
  let routes: OpsRoute[] = [];
  // The hostile-traffic budgets every thread shares: unknown IDs per source, and the sources over a budget.
  const alarms = new SourceAlarms(config.sessions.budgetWindow, log);
  const lookups = new GuessBudget(store, config.sessions, mainCounters, alarms);
  const answer = (payload: unknown): unknown => {
    const call = payload as StoreCall | LogCall | OpsCall | LookupCall | OverBudgetCall | RegistryCall;
    if (call.op === 'store') return runStoreCall(store, call);
    if (call.op === 'registry' && cluster) return cluster.answer(call);
    if (call.op === 'lookup') return runLookupCall(lookups, call);
    if (call.op === 'overBudget') return void alarms.note(call.source, call.budget, call.count);
    if (call.op === 'log') return void log[call.level](call.fields, call.msg);
    if (call.op === 'ops') return answerRelayed(routes, call);
    throw new Error(`unknown call ${String((call as { op?: unknown }).op)}`);
  };
  const pool = new ContextPool(
    { threads, stallTimeoutMs: config.workers.stallTimeout, maxHeapMb: config.workers.maxHeapMb },
    {
      onConnection: config.hooks.onConnection,
      onSessionSuspend: config.hooks.onSessionSuspend,
      connectionTimeout: config.hooks.connectionTimeout,
      suspendTimeout: config.hooks.suspendTimeout,
      maxMementoSize: config.sessions.maxMementoSize,
      idHashSalt: ID_HASH_SALT,
      nodeId: config.cluster.nodeId,
    },
    {
      config,
      threads,
      port: config.port,
      shared,
      clock: options.clock?.shared ?? null,
      timeOrigin: performance.timeOrigin,
      storeKind: store.kind,
      idHashSalt: ID_HASH_SALT,
      ops: { health: config.health.enabled, adminBase: token ? adminPath : null },
      metrics: metrics !== null,
      cluster: cluster?.setup() ?? null,
    },
    {
      onWorkerGone: (slot, threadId) => {
        // Its contexts went with it: the cap and the figures stop counting them now. Its
        // sessions come back from the store on their next request, on its replacement.
        const lost = new SlotFigures(shared, slot).clearHeld();
        cap.clearSlot(slot);
        mainCounters.workersLost++;
        log.error({ event: 'worker-lost', threadId, slot, contexts: lost }, 'a worker thread stopped; its sessions will resume from their mementos');
        retireDeadSlots();
        void standIn?.();
      },
      onWorkerEvent: (event) => log[event.level]({ event: 'worker', ...(event.error && { err: loggedError(event.error) }) }, event.msg),
      // An error from a thread comes back as class Error (a ResidentError too): logged with its name.
      onPoolError: (error) =>
        (error as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY'
          ? log.error({ event: 'worker-out-of-memory', err: error }, 'a worker thread ran out of heap (workers.maxHeapMb): it is replaced')
          : log.error({ event: 'pool-error', err: loggedError(toWireError(error, '')) }, 'worker pool error'),
      onWorkerStalled: (threadId, stalledMs) =>
        log.error({ event: 'worker-stalled', threadId, stalledMs: Math.round(stalledMs) }, 'a worker thread stopped turning (workers.stallTimeout): it is terminated and replaced'),
      // The alert an operator must act on: the pool stays degraded until a restart.
      onCrashLoop: (lost, reason) => {
        log.error({ event: 'worker-crash-loop', lost, reason }, 'worker threads keep dying: no more are started; /readyz answers 503 until a restart');
        retireDeadSlots();
        void standIn?.();
      },
      onCall: answer,
    },
  );
  undo.push(() => pool.close());
  const sessions = new SessionsView(pool, shared, store, log, alarms);
  // Once no thread will replace a dead one, its slot's sessions are homed on the next slot
  // (src/contexts/shared-state.ts, Homes), and hops waiting for it stop waiting.
  const homes = new Homes(shared);
  const retireDeadSlots = () => {
    if (!pool.degraded) return;
    const alive = new Set(pool.edges.map(({ slot }) => slot));
    for (let slot = 0; slot < threads; slot++) {
      if (alive.has(slot) || homes.isRetired(slot)) continue;
      homes.retire(slot);
      void pool.broadcast({ op: 'retired', slot });
    }
  };
  // Set once listening: when the crash-loop breaker has tripped and no edge thread is left, the
  // main thread listens itself and answers 503 (and the probes), rather than refuse connections.
  let standIn: (() => Promise<void>) | undefined;
  let stopping: Promise<{ suspended: number; lost: number }> | undefined;
  const probe = config.health.enabled ? new StoreProbe(store, log) : null;
  if (probe) {
    undo.push(() => probe.stop());
    await probe.start();
    const clusterHealth = cluster && { serving: () => cluster.serving(), nodeId: config.cluster.nodeId, owner: () => cluster.keeper.owner };
    routes.push(healthRoutes({ pool, storeKind: store.kind, probe, stopping: () => stopping !== undefined, ...(clusterHealth && { cluster: clusterHealth }) }));
  }
  // Metrics go under the admin path (same token) unless they have a listener of their own.
  const metricsOnAdmin = metrics && config.metrics.port === undefined ? metrics : null;
  if (token) routes.push(adminRoutes({ path: adminPath, token, sessions, pool, store, log, metrics: metricsOnAdmin, ...(cluster && { cluster: () => cluster.describe() }) }));
  routes = [...routes];
  let port: number;
  try {
    port = await pool.ready();
  } catch (error) {
    throw poolStartFailure(error, config.port, config.host);
  }
  metrics?.watch(sessions, pool, store.kind, shared);
  await cluster?.attach({ broadcast: (call, timeoutMs) => pool.broadcast(call, timeoutMs) });
  // Records left expired by an earlier run go now, not one sweep interval from now.
  await sessions.sweepStore();
  const sweeps = config.store.sweepInterval > 0 ? scheduleSweeps(config.store.sweepInterval, () => sessions.sweepStore()) : null;
  undo.push(() => sweeps?.stop());

  // The listeners are on the worker threads, which piscina unrefs: this keeps the process
  // alive while it serves, as a listener on this thread did.
  const serving = setInterval(() => {}, 1 << 30);
  undo.push(() => clearInterval(serving));
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  let fallback: Server | null = null;
  standIn = async () => {
    if (fallback || stopping || !pool.degraded || pool.edges.length > 0) return;
    fallback = workersDownListener(routes, `${host.includes(':') ? `[${host}]` : host}:${port}`);
    await listen(fallback, 'port', port, config.host, '', true).catch((error: Error) => log.error({ event: 'listen-error', err: error }, 'cannot listen for the 503 answers'));
  };
  void standIn();
  undo.push(() => fallback && closeListener(fallback));
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let metricsServer: Server | null = null;
  if (metrics && config.metrics.port !== undefined) {
    const listener = metricsListener(metrics);
    const same = config.metrics.port !== 0 && config.metrics.port === port ? ' (the same as port)' : '';
    await listen(listener, 'metrics.port', config.metrics.port, config.metrics.host, same);
    metricsServer = listener;
  }
  const metricsUrl = metricsServer
    ? `http://${config.metrics.host}:${(metricsServer.address() as AddressInfo).port}/metrics`
    : metricsOnAdmin
      ? `${url}${adminPath}metrics`
      : null;

  const shutdown = () =>
    (stopping ??= (async () => {
      sessions.markClosing();
      sweeps?.stop();
      const result = await stopEdges(pool, config.limits.shutdownTimeout, shared, log);
      if (metricsServer) await closeListener(metricsServer);
      if (fallback) await closeListener(fallback);
      await pool.close();
      // Every context is suspended and released (or lost): the lease goes last, so its sessions are claimable at once.
      await cluster?.stop(true).catch((error: Error) => log.warn({ event: 'lease-release-failed', err: error }, 'cannot delete the cluster lease: it lapses on its own'));
      probe?.stop();
      await store.close();
      metrics?.close();
      clearInterval(serving);
      log.info({ event: 'stopped', ...result }, 'server stopped');
      return result;
    })());

  return { url, port, sessions, pool, log, adminUrl: token ? `${url}${adminPath}` : null, metricsUrl, metrics, shutdown };
}

/**
 * Every edge at once: its listener closes, its requests in flight finish, and each of its
 * contexts is suspended with reason 'shutdown' (src/sessions/shutdown.ts), within `deadlineMs`
 * (0: none). A thread that has not finished by the deadline is stopped with the pool, and its
 * contexts still live are counted lost.
 */
async function stopEdges(pool: ContextPool, deadlineMs: number, shared: ReturnType<typeof newSharedState>, log: Logger): Promise<{ suspended: number; lost: number }> {
  const edges = pool.edges;
  const call: ControlCall = { op: 'shutdown', deadlineMs };
  // A little past the threads' own deadline: they count what they lost themselves.
  const grace = deadlineMs > 0 ? deadlineMs + 1_000 : Infinity;
  const answers = await Promise.all(
    edges.map(({ slot }) =>
      race(pool.call<{ suspended: number; lost: number }>(slot, call), grace).then(
        (value) => ({ slot, value }),
        () => ({ slot, value: undefined }),
      ),
    ),
  );
  let suspended = 0;
  let lost = 0;
  for (const { slot, value } of answers) {
    if (value) {
      suspended += value.suspended;
      lost += value.lost;
    } else {
      const figures = new SlotFigures(shared, slot);
      const live = figures.held('live') + figures.held('suspending');
      lost += live;
      log.error({ event: 'shutdown-timeout', slot, contexts: live }, 'a worker thread did not finish its shutdown by the deadline');
    }
  }
  return { suspended, lost };
}

function race<T>(promise: Promise<T>, ms: number): Promise<T> {
  if (ms === Infinity) return promise;
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error('deadline')), ms)))]).finally(() => clearTimeout(timer));
}

/** Binds `port` without SO_REUSEPORT for a moment: that fails while anything listens on it. */
async function assertPortFree(port: number, host: string): Promise<void> {
  const probe = createServer();
  await listen(probe, 'port', port, host);
  await new Promise((resolve) => probe.close(resolve));
}

/**
 * Listens, or fails with RESIDENT_ERR_LISTEN naming the config key (a port in use, a host that
 * is not an address of this machine), which the CLI turns into exit 2.
 */
async function listen(server: Server, key: 'port' | 'metrics.port', port: number, host: string, note = '', reusePort = false): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const fail = (error: Error) => {
      reject(new ResidentError('RESIDENT_ERR_LISTEN', `Cannot listen on ${key} ${port}${note} at ${host}: ${error.message}`, { cause: error }));
    };
    server.once('error', fail);
    server.listen({ port, host, reusePort }, () => {
      server.off('error', fail);
      resolve();
    });
  });
}

function closeListener(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** The URL path of a request, without its query. */
function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/** metrics.port: a listener of its own for Prometheus, with no token (bind it to a private address). */
function metricsListener(metrics: Metrics): Server {
  return createServer((req, res) => {
    if (pathOf(req) !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      send(res, 404, 'text/plain; charset=utf-8', 'Not Found');
      return;
    }
    metrics.text().then(
      (text) => send(res, 200, metrics.contentType, text),
      () => send(res, 500, 'text/plain; charset=utf-8', 'metrics unavailable'),
    );
  });
}

/**
 * What answers on the port once no edge thread is left and none will start (the crash-loop
 * breaker tripped): the probes as usual (/readyz says why), every other request 503
 * RESIDENT_ERR_WORKERS_DOWN, before any session is made.
 */
function workersDownListener(routes: readonly OpsRoute[], listenHost: string): Server {
  return createServer((req, res) => {
    void (async () => {
      try {
        const target = parseTarget(req, listenHost);
        if (routes.some((route) => route.claims(target.path))) {
          const answer = await answerRelayed(routes, { op: 'ops', method: req.method ?? 'GET', target, headers: req.headers });
          res.writeHead(answer.status, answer.headers);
          res.end(req.method === 'HEAD' ? undefined : answer.body);
          return;
        }
      } catch {
        // An unparseable target: it gets the same 503.
      }
      const error = new ResidentError('RESIDENT_ERR_WORKERS_DOWN');
      send(res, error.status, 'text/plain; charset=utf-8', error.publicMessage, { 'retry-after': '1' });
    })();
  });
}
