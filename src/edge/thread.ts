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
import type { AddressInfo } from 'node:net';
import { threadId, type MessagePort } from 'node:worker_threads';
import type { Clock } from '../clock.ts';
import type { ResidentConfig } from '../config.ts';
import { setHomeSlot } from '../contexts/ids.ts';
import type { WireRequest } from '../contexts/protocol.ts';
import { RpcPort, withTransfer } from '../contexts/rpc.ts';
import { SharedCap, SlotFigures, slotCounters, slotHeld, type SharedState } from '../contexts/shared-state.ts';
import { ResidentError } from '../errors.ts';
import { compileTrust } from '../http/client-ip.ts';
import { sessionCookieWriter } from '../http/cookies.ts';
import { PublicFiles } from '../http/static.ts';
import type { RequestTarget } from '../http/target.ts';
import { setHashSalt } from '../id-hash.ts';
import { Sessions, type ListQuery, type Outcome } from '../sessions/index.ts';
import { RemoteStore } from '../stores/remote.ts';
import { handle, type Edge } from './handler.ts';
import { LastWords } from './last-words.ts';
import { LocalHost, type Dispatch } from './local-host.ts';
import { Mesh, toWireOutcome, type PeerCall } from './mesh.ts';
import { RequestMetrics } from './request-metrics.ts';
import { threadLog } from './thread-log.ts';

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
  | { op: 'stopListening' }
  | { op: 'shutdown'; deadlineMs: number };

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
  const clock = edgeClock(setup);
  const host = new LocalHost(runtime.dispatch);
  const figures = new SlotFigures(setup.shared, slot);
  let sessions: Sessions | undefined;
  const mesh = new Mesh(slot, setup.threads, threadId, (call) => answerPeer(call), host);
  sessions = new Sessions({
    config: config.sessions,
    host,
    store: new RemoteStore(main, setup.storeKind),
    clock,
    log,
    peers: mesh,
    cap: new SharedCap(setup.shared, slot),
    counters: slotCounters(setup.shared, slot),
    held: figures,
  });
  const local = sessions;
  const metrics = setup.metrics ? new RequestMetrics() : null;

  function answerPeer(call: PeerCall): unknown {
    switch (call.op) {
      case 'serve':
        figures.add('hopsIn');
        return local.serve(call.presented, call.clientIp, call.request).then(toWireOutcome);
      case 'choose':
        return local.choose(call.presented, call.clientIp);
      case 'stream':
        return host.run(call.task).then((reply) => (reply.type === 'chunk' && reply.bytes ? withTransfer(reply, [reply.bytes]) : reply));
      case 'oldestIdle':
        return local.oldestIdle() ?? null;
      case 'evictOldestIdle':
        return local.evictOldestIdle();
      case 'userHere':
        return local.userHere(call.userId);
      case 'closeUserHere':
        return local.closeUserHere(call.userId, call.by);
      case 'closeSession':
        return local.closeSession(call.id, call.by);
    }
  }

  /**
   * Where a request whose Cookie header names sessions on several homes goes, and with which of
   * its IDs (A8): every home named is asked which of its IDs would win for this client, and the
   * first winner in header order takes the request, wherever it is homed. Before, only the home
   * of the first value was asked, so a junk or tossed value homed on another thread in front of
   * the real one cost the client its session (a new one, whose Set-Cookie overwrote the real
   * cookie), or a 400 when it named another client's session. Only a header with values homed
   * on several threads pays this round of questions.
   */
  const chooseHome = async (presented: string[], clientIp: string): Promise<{ home: number; ids: string[] }> => {
    const byHome = new Map<number, string[]>();
    for (const id of presented) {
      const home = mesh.homeOf(id);
      const ids = byHome.get(home);
      if (ids) ids.push(id);
      else byHome.set(home, [id]);
    }
    const answers = await Promise.all(
      [...byHome].map(async ([home, ids]) => ({ home, ids, ...(home === slot ? await local.choose(ids, clientIp) : await mesh.choose(home, ids, clientIp)) })),
    );
    const at = (ids: string[], index: number | undefined) => (index === undefined || index < 0 ? Infinity : presented.indexOf(ids[index]!));
    let mine: { home: number; id: string; at: number } | undefined;
    let foreign: { home: number; ids: string[]; at: number } | undefined;
    for (const answer of answers) {
      const mineAt = at(answer.ids, answer.mine);
      if (mineAt < (mine?.at ?? Infinity)) mine = { home: answer.home, id: answer.ids[answer.mine!]!, at: mineAt };
      const foreignAt = at(answer.ids, answer.foreign);
      if (foreignAt < (foreign?.at ?? Infinity)) foreign = { home: answer.home, ids: answer.ids, at: foreignAt };
    }
    if (mine) return { home: mine.home, ids: [mine.id] };
    // None of this client's: a session bound to another client answers 400 from its home; with
    // none either, the home of the first value makes the new session (and logs the unknown IDs).
    if (foreign) return { home: foreign.home, ids: foreign.ids };
    const first = answers[0]!;
    return { home: first.home, ids: first.ids };
  };

  const serve = async (presented: string[], clientIp: string, request: WireRequest, trusted: boolean): Promise<Outcome> => {
    let home = slot;
    let ids = presented;
    if (presented.length > 0) {
      home = mesh.homeOf(presented[0]!);
      // Only a home's own IDs go to it: an ID homed elsewhere read from the store there would
      // be a second context of one session.
      if (presented.length > 1 && presented.some((id) => mesh.homeOf(id) !== home)) ({ home, ids } = await chooseHome(presented, clientIp));
    }
    // Behind a trusted proxy, connections mix clients: a new session goes to the thread
    // holding the fewest contexts, not to whichever thread the proxy's connection reached.
    else if (trusted && setup.threads > 1) home = leastLoaded(setup, slot);
    if (home === slot) return local.serve(ids, clientIp, request);
    figures.add('hopsOut');
    return mesh.serve(home, ids, clientIp, request);
  };

  const files = await PublicFiles.open(config.publicDir);
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
    observe: metrics ? (status, seconds, code) => metrics.observe(status, seconds, code) : null,
    listenHost: '',
  };
  // Requests this edge is answering, its hops to other threads included: a shutdown closes the
  // connections only once they are written (or at the deadline).
  const lastWords = new LastWords();
  lastWords.install(log);
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
    (req, res) => void answering(lastWords.track(res, handle(edge, req, res, false))),
  );
  // With a listener here node sends no `100 Continue` of its own: handle() sends it only when
  // the body is going to be read, so a body over the limit is refused before it is sent.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void answering(lastWords.track(res, handle(edge, req, res, true))));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // reusePort: every edge thread accepts on the one port (Linux 3.9+; see src/server.ts for
    // platforms without it). It implies an exclusive handle per thread.
    server.listen({ port: setup.port, host: config.host, reusePort: setup.threads > 1 }, () => {
      server.off('error', reject);
      resolve();
    });
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
      case 'stalledHop':
        mesh.stalledHop(call.slot, call.call);
        return null;
      case 'stopListening':
        await stopListening();
        return null;
      case 'shutdown': {
        void stopListening();
        // The main thread stops the threads at the deadline: nothing to stop from here.
        const result = await local.shutdown(call.deadlineMs, async () => {});
        await allAnswered(call.deadlineMs);
        server.closeAllConnections();
        return result;
      }
      default:
        return answerPeer(call);
    }
  });
  return port;
}

/** The slot with the fewest live contexts (this one on a tie). */
function leastLoaded(setup: EdgeSetup, slot: number): number {
  let best = slot;
  let bestCount = slotHeld(setup.shared, slot, 'live');
  for (let other = 0; other < setup.threads; other++) {
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
