/**
 * An edge thread: what every worker thread of the pool runs once the main thread hands it its
 * slot. It listens on the server's port beside the other threads (SO_REUSEPORT: the kernel
 * spreads connections over them), holds the sessions homed on its slot and their contexts, and
 * answers each request here when the session is homed here, or through its home thread (a hop
 * over the mesh) when not. See ../../README.md, "How a request travels".
 *
 * The main thread keeps what must be one: the store, the health and admin answers, the log
 * stream, the watchdog, and the shutdown order. It reaches this thread through `main`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Server as NetServer, type AddressInfo } from 'node:net';
import { threadId, type MessagePort } from 'node:worker_threads';
import type { Clock } from '../clock.ts';
import type { ResidentConfig } from '../config.ts';
import { setHomeSlot } from '../contexts/ids.ts';
import type { WireRequest } from '../contexts/protocol.ts';
import { RpcPort, withTransfer } from '../contexts/rpc.ts';
import { Homes, SharedCap, SlotFigures, slotCounters, slotHeld, type SharedState } from '../contexts/shared-state.ts';
import { ResidentError } from '../errors.ts';
import { compileTrust } from '../http/client-ip.ts';
import { sessionCookieWriter } from '../http/cookies.ts';
import { PublicFiles } from '../http/static.ts';
import type { RequestTarget } from '../http/target.ts';
import { setHashSalt } from '../id-hash.ts';
import { Sessions, type ListQuery, type Outcome } from '../sessions/index.ts';
import { RemoteLookups, RemoteStore, type OverBudgetCall } from '../stores/remote.ts';
import { batchedReports } from '../sessions/source-alarms.ts';
import { handle, type Edge } from './handler.ts';
import { LastWords } from './last-words.ts';
import { LocalHost, type Dispatch } from './local-host.ts';
import { Mesh, toWireOutcome, type PeerCall } from './mesh.ts';
import { RequestMetrics } from './request-metrics.ts';
import { threadLog } from './thread-log.ts';
import { setHookLogSink } from '../contexts/hook-log.ts';
import { ClusterThread, type ClusterControl, type ClusterSetup } from '../cluster/thread-side.ts';

/** What the main thread gives an edge thread with its slot. */
export interface EdgeSetup {
  config: ResidentConfig;
  threads: number;
  /** The port every edge thread listens on (the first one's, when config.port is 0). */
  port: number;
  shared: SharedState;
  /** A test's manual clock (a Float64 in shared memory), or null for the monotonic clock. */
  clock: SharedArrayBuffer | null;
  /** The main thread's performance.timeOrigin: every thread's monotonic times on one scale. */
  timeOrigin: number;
  storeKind: string;
  idHashSalt: string;
  /** Paths the main thread answers (health probes, admin view, metrics under it). */
  ops: { health: boolean; adminBase: string | null };
  metrics: boolean;
  /** The cluster's side of this thread (cluster.enabled), or null. */
  cluster: ClusterSetup | null;
}

/** What the main thread asks an edge thread (besides the peer calls it may relay). */
export type ControlCall =
  | { op: 'peer'; slot: number; port: MessagePort; threadId: number }
  | { op: 'info'; id: string }
  | { op: 'list'; query: ListQuery }
  | { op: 'sessionsOfUser'; userId: string }
  | { op: 'closeUser'; userId: string; by: string }
  | { op: 'suspendSession'; id: string }
  | { op: 'closeSession'; id: string; by: string }
  | { op: 'sweep' }
  | { op: 'dropExpired'; ids: string[] }
  | { op: 'stats'; gc?: boolean }
  | { op: 'metrics' }
  | { op: 'stalledHop'; slot: number; call: number }
  | { op: 'retired'; slot: number }
  | { op: 'stopListening' }
  | { op: 'shutdown'; deadlineMs: number }
  | ClusterControl;

/** What an edge thread asks the main thread: a store call (../stores/remote.ts), a log line (./thread-log.ts), or this. */
export interface OpsCall {
  op: 'ops';
  method: string;
  target: RequestTarget;
  headers: Record<string, string | string[] | undefined>;
}
export interface OpsAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface Runtime {
  dispatch: Dispatch;
  /** Contexts held on this thread. */
  contexts(): number;
}

/** Starts the edge on this thread; resolves with the port it listens on. */
export async function startEdge(mainPort: MessagePort, slot: number, setup: EdgeSetup, runtime: Runtime): Promise<number> {
  const { config } = setup;
  setHomeSlot(slot);
  setHashSalt(setup.idHashSalt);
  const main = new RpcPort(mainPort, 'the main thread');
  const log = threadLog(main, config.log.level);
  // ctx.log's lines take the same way, and a response waits for them like for the edge's own.
  setHookLogSink(log);
  const clock = edgeClock(setup);
  const lastWords = new LastWords();
  lastWords.install(log);
  const host = new LocalHost(runtime.dispatch, () => lastWords.dying);
  const figures = new SlotFigures(setup.shared, slot);
  let sessions: Sessions | undefined;
  const homes = new Homes(setup.shared);
  const mesh = new Mesh(slot, homes, threadId, (call) => answerPeer(call), host, log);
  const store = new RemoteStore(main, setup.storeKind);
  const counters = slotCounters(setup.shared, slot);
  const cluster = setup.cluster && new ClusterThread(main, config, setup.cluster, store, counters, log);
  sessions = new Sessions({
    config: config.sessions,
    host,
    store,
    ...(cluster && { ownership: cluster.ownership }),
    homes: setup.threads,
    lookups: new RemoteLookups(main),
    overBudget: batchedReports((source, budget, count) => {
      void main.call({ op: 'overBudget', source, budget, count } satisfies OverBudgetCall).catch(() => {});
    }),
    clock,
    log,
    peers: mesh,
    cap: new SharedCap(setup.shared, slot),
    counters,
    held: figures,
  });
  const local = sessions;
  const metrics = setup.metrics ? new RequestMetrics() : null;

  function answerPeer(call: PeerCall): unknown {
    switch (call.op) {
      case 'serve':
        figures.add('hopsIn');
        return local.serve(call.presented, call.clientIp, call.request).then((outcome) => {
          // A hook ended this thread meanwhile: its answer was cut short by the exit (a hook
          // that calls process.exit() gets an error back), so the edge it came from says 502.
          if (lastWords.dying) throw new ResidentError('RESIDENT_ERR_WORKER_LOST');
          // Its log lines are written before the edge it came from sends the answer.
          const logged = log.delivered();
          return logged ? logged.then(() => toWireOutcome(outcome)) : toWireOutcome(outcome);
        });
      case 'claimable':
        return local.claimable(call.presented, call.clientIp);
      case 'stream':
        return host.run(call.task).then((reply) => (reply.type === 'chunk' && reply.bytes ? withTransfer(reply, [reply.bytes]) : reply));
      case 'oldestIdle':
        return local.oldestIdle(call.source);
      case 'evictOldestIdle':
        return local.evictOldestIdle({ unproven: call.unproven === true, ofSource: call.ofSource === true }, call.source);
      case 'userHere':
        return local.userHere(call.userId);
      case 'closeUserHere':
        return local.closeUserHere(call.userId, call.by, call.requester);
      case 'limitUser':
        return local.limitUserHere(call.userId, call.keepId);
      case 'closeSession':
        return local.closeSessionForPeer(call.id, call.by, call.requester);
    }
  }

  /**
   * The home a request goes to, and the IDs it presents there. Only the home's IDs go: an ID
   * homed elsewhere, read from the store here, would be a second context of one session. When
   * the cookie header names sessions of several homes (duplicate cookie names, A8), each home
   * is asked in header order whether it holds one of this client, and the first that does wins;
   * a junk or foreign value can never shadow a valid one.
   */
  const route = async (presented: string[], clientIp: string, trusted: boolean): Promise<{ home: number; ids: string[] }> => {
    if (presented.length === 0) {
      // Behind a trusted proxy, connections mix clients: a new session goes to the thread
      // holding the fewest contexts, not to whichever thread the proxy's connection reached.
      return { home: trusted && setup.threads > 1 ? leastLoaded(setup, slot, homes, (other) => mesh.connected(other)) : slot, ids: presented };
    }
    const idsOf = (home: number) => presented.filter((id) => mesh.homeOf(id) === home);
    const first = mesh.homeOf(presented[0]!);
    const order = [...new Set(presented.map((id) => mesh.homeOf(id)))];
    if (order.length === 1) return { home: first, ids: presented };
    let foreign: number | undefined;
    for (const home of order) {
      const ids = idsOf(home);
      const verdict = home === slot ? await local.claimable(ids, clientIp) : await mesh.claimable(home, ids, clientIp);
      if (verdict === 'own') return { home, ids };
      if (verdict === 'foreign') foreign ??= home;
    }
    // None of them is this client's: a new session here, or the 400 of the one bound elsewhere.
    return foreign === undefined ? { home: slot, ids: idsOf(slot) } : { home: foreign, ids: idsOf(foreign) };
  };

  const serve = async (presented: string[], clientIp: string, request: WireRequest, trusted: boolean): Promise<Outcome> => {
    for (;;) {
      const { home, ids } = await route(presented, clientIp, trusted);
      if (home === slot) return local.serve(ids, clientIp, request);
      figures.add('hopsOut');
      const outcome = await mesh.serve(home, ids, clientIp, request);
      // Its home thread died for good while this waited: the sessions of that slot have a new
      // home now, and this request goes there.
      if (outcome !== 'retired') return outcome;
    }
  };

  const files = await PublicFiles.open(config.publicDir, config.static);
  const cookie = { name: config.sessions.cookieName, timeout: config.sessions.cookieTimeout, sameSite: config.sessions.sameSite };
  const opsPaths = setup.ops;
  const edge: Edge = {
    config,
    log,
    serve,
    streams: mesh,
    closing: () => local.closing,
    cookie,
    setCookie: sessionCookieWriter(cookie),
    trust: compileTrust(config.sessions.trustProxy),
    files,
    ops:
      opsPaths.health || opsPaths.adminBase
        ? {
            claims: (path) =>
              (opsPaths.health && (path === '/healthz' || path === '/readyz')) ||
              (opsPaths.adminBase !== null && (path.startsWith(opsPaths.adminBase) || path === opsPaths.adminBase.slice(0, -1))),
            answer: (target, req, res) => answerOps(main, target, req, res),
          }
        : null,
    logsDelivered: () => log.delivered(),
    observe: metrics ? (status, seconds, code) => metrics.observe(status, seconds, code) : null,
    listenHost: '',
    cluster: cluster?.edge ?? null,
  };
  // Requests this edge is answering, its hops to other threads included: a shutdown closes the
  // connections only once they are written (or at the deadline).
  let answeringNow = 0;
  let answered: (() => void) | undefined;
  const answering = (done: Promise<void>) => {
    answeringNow++;
    void done.finally(() => {
      if (--answeringNow === 0) answered?.();
    });
  };
  const allAnswered = (deadlineMs: number) =>
    answeringNow === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          answered = resolve;
          if (deadlineMs > 0) setTimeout(resolve, deadlineMs).unref();
        });
  const server = createServer(
    {
      headersTimeout: config.limits.headersTimeout,
      requestTimeout: config.limits.requestTimeout,
      maxHeaderSize: 16 * 1024,
      // Node checks the two timeouts above on this interval (30 s by default), which would let
      // a slow-headers client linger well past headersTimeout.
      connectionsCheckingInterval: Math.max(100, Math.min(30_000, config.limits.headersTimeout / 4 || 30_000)),
    },
    (req, res) => void answering(lastWords.track(res, lastWords.dying ? Promise.resolve() : handle(edge, req, res, false))),
  );
  // With a listener here node sends no `100 Continue` of its own: handle() sends it only when
  // the body is going to be read, so a body over the limit is refused before it is sent.
  // A request that arrives while this thread is dying is answered 502 by track() and not run:
  // run, it would hop to its session's home and take effect there behind a 502 that says it
  // was lost (a client retrying it would then run it twice).
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void answering(lastWords.track(res, lastWords.dying ? Promise.resolve() : handle(edge, req, res, true))));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // reusePort: every edge thread accepts on the one port (Linux 3.9+; see src/server.ts for
    // platforms without it). It implies an exclusive handle per thread.
    server.listen({ port: setup.port, host: config.host, reusePort: setup.threads > 1 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Its keep-alive connections stay open while it flushes: a request arriving on one then is
  // answered 502 (./last-words.ts) rather than cut unanswered. So net.Server's close, which
  // only stops listening: http.Server's would close the idle connections too (Node 19+).
  lastWords.onDying(() => NetServer.prototype.close.call(server));
  // Requests other nodes forward here for this node's sessions (the cluster's private listener).
  await cluster?.listen((req, res, forwarded) => answering(lastWords.track(res, handle(edge, req, res, false, forwarded))), {
    closeSession: (id, by) => local.closeSession(id, by),
  });
  const { port } = server.address() as AddressInfo;
  const host0 = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  edge.listenHost = `${host0.includes(':') ? `[${host0}]` : host0}:${port}`;

  let stopped: Promise<void> | undefined;
  const stopListening = () =>
    (stopped ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    }));

  main.handle(async (payload) => {
    const call = payload as ControlCall | PeerCall;
    switch (call.op) {
      case 'peer':
        mesh.connect(call.slot, call.port, call.threadId);
        return null;
      case 'info':
        return local.info(call.id) ?? null;
      case 'list':
        return local.list(call.query);
      case 'sessionsOfUser':
        return local.sessionsOfUser(call.userId);
      case 'closeUser':
        return local.closeUser(call.userId, { by: call.by });
      case 'suspendSession':
        return local.suspendSession(call.id);
      case 'sweep':
        local.sweep();
        return null;
      case 'dropExpired':
        return local.dropExpired(call.ids);
      case 'stats':
        if (call.gc) (globalThis as { gc?: () => void }).gc?.();
        return { threadId, slot, contexts: runtime.contexts(), heapUsed: process.memoryUsage().heapUsed, inFlight: slotHeld(setup.shared, slot, 'inFlight') };
      case 'metrics':
        return metrics ? metrics.json() : [];
      case 'retired':
        mesh.retired(call.slot);
        return null;
      case 'stalledHop':
        mesh.stalledHop(call.slot, call.call);
        return null;
      case 'stopListening':
        await stopListening();
        return null;
      case 'shutdown': {
        void stopListening();
        const started = Date.now();
        // The main thread stops the threads at the deadline: nothing to stop from here.
        const result = await local.shutdown(call.deadlineMs, async () => {});
        // The answers still being written get what is left of the deadline, not a new one: the
        // main thread counts a thread that has not reported a second past it as all lost.
        await allAnswered(call.deadlineMs > 0 ? Math.max(1, call.deadlineMs - (Date.now() - started)) : 0);
        server.closeAllConnections();
        await cluster?.close();
        return result;
      }
      case 'relinquish':
        return cluster?.control(call, (deadlineMs) => local.relinquish(deadlineMs)) ?? null;
      default:
        return answerPeer(call);
    }
  });
  return port;
}

/**
 * The slot with the fewest live contexts (this one on a tie), of those not retired and with a
 * thread now: a dead thread's count is cleared to 0, and its slot would otherwise draw every
 * new client while its replacement starts (each waiting for it, up to 10 s).
 */
function leastLoaded(setup: EdgeSetup, slot: number, homes: Homes, connected: (slot: number) => boolean): number {
  let best = slot;
  let bestCount = slotHeld(setup.shared, slot, 'live');
  for (let other = 0; other < setup.threads; other++) {
    if (other === slot || homes.isRetired(other) || !connected(other)) continue;
    const count = slotHeld(setup.shared, other, 'live');
    if (count < bestCount) {
      best = other;
      bestCount = count;
    }
  }
  return best;
}

/** Monotonic ms on the main thread's scale, or a test's manual clock. */
function edgeClock(setup: EdgeSetup): Clock {
  if (setup.clock) {
    const cell = new Float64Array(setup.clock);
    return { now: () => cell[0]! };
  }
  const offset = performance.timeOrigin - setup.timeOrigin;
  return { now: () => performance.now() + offset };
}

/** The health probes and the admin view: answered by the main thread, written here. */
async function answerOps(main: RpcPort, target: RequestTarget, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const call: OpsCall = { op: 'ops', method: req.method ?? 'GET', target, headers: req.headers };
  let answer: OpsAnswer;
  try {
    answer = await main.call<OpsAnswer>(call);
  } catch {
    answer = { status: 503, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'retry-after': '1' }, body: new ResidentError('RESIDENT_ERR_SHUTTING_DOWN').publicMessage };
  }
  res.writeHead(answer.status, answer.headers);
  res.end(req.method === 'HEAD' ? undefined : answer.body);
}
