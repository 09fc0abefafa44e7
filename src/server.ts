/**
 * The HTTP edge, on the main thread: static files, the session cookie, the client IP, and
 * writing what the worker answered. Everything about a session's life is in ./sessions/,
 * behind the one call `sessions.serve(...)`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DestinationStream } from 'pino';
import { monotonicClock, type Clock } from './clock.ts';
import type { ResidentConfig } from './config.ts';
import { ContextPool } from './contexts/pool.ts';
import type { StreamedBody } from './contexts/protocol.ts';
import { Sessions, type Outcome } from './sessions/index.ts';
import { ErrorCodes, ResidentError, isResidentError } from './errors.ts';
import { readBody } from './http/body.ts';
import { cameOverTls, clientIp, compileTrust } from './http/client-ip.ts';
import { expiredSessionCookie, presentedSessionIds, sessionCookieWriter, setsCookieNamed, type CookieSettings } from './http/cookies.ts';
import { PublicFiles } from './http/static.ts';
import { pulledFrom, streamBody } from './http/stream-response.ts';
import { parseTarget } from './http/target.ts';
import { HOP_BY_HOP } from './contexts/response-headers.ts';
import { ID_HASH_SALT, createLogger, type Logger } from './log.ts';
import { assertSupportedNode } from './node-version.ts';
import { adminRoutes } from './ops/admin.ts';
import { StoreProbe, healthRoutes } from './ops/health.ts';
import { Metrics } from './ops/metrics.ts';
import { send, type OpsRoute } from './ops/respond.ts';
import { openStore } from './stores/open.ts';
import type { ContextStore } from './stores/store.ts';

export interface StartOptions {
  config: ResidentConfig;
  /** Monotonic clock for timeouts; tests inject one they can move. */
  clock?: Clock;
  /** Where log lines go (default: stdout). */
  logDestination?: DestinationStream;
  store?: ContextStore;
}

export interface ResidentServer {
  /** http://host:port of the listening server. */
  readonly url: string;
  readonly port: number;
  readonly sessions: Sessions;
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

/** The pieces a request handler needs; built once at startup. */
interface Edge {
  config: ResidentConfig;
  sessions: Sessions;
  /** Where a streamed response body is pulled from. */
  pool: ContextPool;
  log: Logger;
  cookie: CookieSettings;
  setCookie: (id: string, secure: boolean) => string;
  trust: ReturnType<typeof compileTrust>;
  files: PublicFiles;
  /** Health probes and the admin view, answered before static files and hooks. */
  ops: OpsRoute[];
  metrics: Metrics | null;
  /** host:port of the listener: the host of request.url for an HTTP/1.0 request without Host. */
  listenHost: string;
}

const TEXT = 'text/plain; charset=utf-8';

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
  const { token, path: adminPath } = config.admin;
  // Only metrics something can read: under the admin path (needs the token) or on metrics.port.
  const metrics = config.metrics.enabled && (token || config.metrics.port !== undefined) ? new Metrics() : null;
  if (metrics) undo.push(() => metrics.close());
  const openedStore = options.store ?? (await openStore(config.store, log));
  const store = metrics ? metrics.instrument(openedStore) : openedStore;
  undo.push(() => store.close());
  let sessions: Sessions | undefined;
  const pool = new ContextPool(
    { threads: config.workers.threads, stallTimeoutMs: config.workers.stallTimeout, maxHeapMb: config.workers.maxHeapMb },
    {
      onConnection: config.hooks.onConnection,
      onSessionSuspend: config.hooks.onSessionSuspend,
      connectionTimeout: config.hooks.connectionTimeout,
      suspendTimeout: config.hooks.suspendTimeout,
      maxMementoSize: config.sessions.maxMementoSize,
      idHashSalt: ID_HASH_SALT,
    },
    {
      onWorkerGone: (workerId) => sessions?.workerGone(workerId),
      onWorkerEvent: (event) => sessions?.workerEvent(event),
      onPoolError: (error) =>
        (error as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY'
          ? log.error({ event: 'worker-out-of-memory', err: error }, 'a worker thread ran out of heap (workers.maxHeapMb): it is replaced')
          : log.error({ event: 'pool-error', err: error }, 'worker pool error'),
      onWorkerStalled: (threadId, stalledMs) =>
        log.error({ event: 'worker-stalled', threadId, stalledMs: Math.round(stalledMs) }, 'a worker thread stopped turning (workers.stallTimeout): it is terminated and replaced'),
      // The alert an operator must act on: the pool stays degraded until a restart.
      onCrashLoop: (lost, reason) =>
        log.error({ event: 'worker-crash-loop', lost, reason }, 'worker threads keep dying: no more are started; /readyz answers 503 until a restart'),
    },
  );
  undo.push(() => pool.close());
  try {
    await pool.ready();
  } catch (error) {
    // A worker's failure may arrive as something other than an Error: say what it was.
    const reason = error instanceof Error ? error.message : typeof error === 'object' && error !== null && 'message' in error ? String(error.message) : String(error);
    throw new ResidentError('RESIDENT_ERR_HOOK_LOAD', `Cannot load the hooks: ${reason}`, { cause: error });
  }
  const activeSessions = new Sessions({
    config: config.sessions,
    storeSweepInterval: config.store.sweepInterval,
    host: pool,
    store,
    clock: options.clock ?? monotonicClock,
    log,
  });
  sessions = activeSessions;
  undo.push(() => activeSessions.shutdown(0, () => pool.close()));
  // Records left expired by an earlier run go now, not one sweep interval from now.
  await activeSessions.sweepStore();
  metrics?.watch(activeSessions, pool, store.kind);

  let stopping: Promise<{ suspended: number; lost: number }> | undefined;
  const routes: OpsRoute[] = [];
  const probe = config.health.enabled ? new StoreProbe(store, log) : null;
  if (probe) {
    undo.push(() => probe.stop());
    await probe.start();
    routes.push(healthRoutes({ pool, storeKind: store.kind, probe, stopping: () => stopping !== undefined }));
  }
  // Metrics go under the admin path (same token) unless they have a listener of their own.
  const metricsOnAdmin = metrics && config.metrics.port === undefined ? metrics : null;
  if (token) routes.push(adminRoutes({ path: adminPath, token, sessions: activeSessions, pool, store, log, metrics: metricsOnAdmin }));

  const files = await PublicFiles.open(config.publicDir);
  undo.push(() => files.close());
  const edge: Edge = {
    config,
    sessions: activeSessions,
    pool,
    log,
    cookie: { name: config.sessions.cookieName, timeout: config.sessions.cookieTimeout, sameSite: config.sessions.sameSite },
    setCookie: sessionCookieWriter({ name: config.sessions.cookieName, timeout: config.sessions.cookieTimeout, sameSite: config.sessions.sameSite }),
    trust: compileTrust(config.sessions.trustProxy),
    files,
    ops: routes,
    metrics,
    listenHost: '', // set once listening
  };
  const server = createServer(
    {
      headersTimeout: config.limits.headersTimeout,
      requestTimeout: config.limits.requestTimeout,
      maxHeaderSize: 16 * 1024,
      // Node checks the two timeouts above on this interval (30 s by default), which would let
      // a slow-headers client linger well past headersTimeout.
      connectionsCheckingInterval: Math.max(100, Math.min(30_000, config.limits.headersTimeout / 4 || 30_000)),
    },
    (req, res) => void handle(edge, req, res, false),
  );
  // With a listener here node sends no `100 Continue` of its own: handle() sends it only when
  // the body is going to be read, so a body over the limit is refused before it is sent.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void handle(edge, req, res, true));
  await listen(server, 'port', config.port, config.host);
  undo.push(() => closeListener(server));
  const { port } = server.address() as AddressInfo;
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  edge.listenHost = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const url = `http://${host}:${port}`;
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
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const result = await activeSessions.shutdown(config.limits.shutdownTimeout, () => pool.close());
      server.closeAllConnections();
      await closed;
      if (metricsServer) await closeListener(metricsServer);
      await pool.close();
      probe?.stop();
      await store.close();
      metrics?.close();
      files.close();
      log.info({ event: 'stopped', ...result }, 'server stopped');
      return result;
    })());

  return { url, port, sessions: activeSessions, pool, log, adminUrl: token ? `${url}${adminPath}` : null, metricsUrl, metrics, shutdown };
}

/**
 * Listens, or fails with RESIDENT_ERR_LISTEN naming the config key (a port in use, a host that
 * is not an address of this machine), which the CLI turns into exit 2.
 */
async function listen(server: Server, key: 'port' | 'metrics.port', port: number, host: string, note = ''): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const fail = (error: Error) => {
      reject(new ResidentError('RESIDENT_ERR_LISTEN', `Cannot listen on ${key} ${port}${note} at ${host}: ${error.message}`, { cause: error }));
    };
    server.once('error', fail);
    server.listen(port, host, () => {
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

/** @param expectsContinue the client sent `Expect: 100-continue` and waits for it to send its body */
async function handle(edge: Edge, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
  const { config, sessions, log } = edge;
  const started = edge.metrics ? performance.now() : 0;
  try {
    // Parsed once: the ops routes, the static files and the hook all see this path.
    const target = parseTarget(req, edge.listenHost);
    if (target.path === '*') {
      // OPTIONS * asks about the server as a whole: no hook has a path to route it on.
      res.writeHead(204, { 'cache-control': 'no-store' });
      res.end();
      return;
    }
    if (edge.ops.length > 0) {
      const route = edge.ops.find((candidate) => candidate.claims(target.path));
      if (route) return await route.handle(target, req, res);
    }
    if (await edge.files.serve(target.path, req, res)) return;
    // No thread left and none will start (the crash-loop breaker tripped): refused here, before
    // a session is made that could never run and would only be evicted as lost.
    if (edge.pool.degraded && edge.pool.threadIds.length === 0) throw new ResidentError('RESIDENT_ERR_WORKERS_DOWN');
    const secure = config.sessions.secureCookie || cameOverTls(req, edge.trust);
    // The scheme is how the request reached us, whatever an absolute-form target said. The
    // worker parses this URL again (`new URL()` in toRequest) and answers 400 if it cannot, a
    // last safety net behind parseTarget.
    const url = `${secure ? 'https' : 'http'}://${target.host}${target.path}${target.search}`;
    const body = await readBody(req, config.limits.maxBodySize, expectsContinue ? () => res.writeContinue() : undefined);
    const outcome = await sessions.serve(
      presentedSessionIds(req.headers.cookie, edge.cookie.name),
      clientIp(req, edge.trust),
      { method: req.method ?? 'GET', url, headers: req.rawHeaders.join('\n'), body },
    );
    write(edge, req, res, outcome, secure);
    edge.metrics?.observeRequest(res.statusCode, (performance.now() - started) / 1000, outcome.kind === 'error' ? outcome.error.code : undefined);
  } catch (error) {
    if (isResidentError(error, 'RESIDENT_ERR_CLIENT_ABORTED')) {
      // The client's doing: nobody to answer, nothing to count, no stack worth keeping.
      log.debug({ event: 'client-aborted', code: error.code }, 'the client went away mid-request');
      res.destroy();
      return;
    }
    if (isResidentError(error, 'RESIDENT_ERR_BAD_REQUEST')) log.debug({ event: 'bad-request', reason: error.message }, 'bad request');
    const failure = isResidentError(error) ? error : new ResidentError('RESIDENT_ERR_HOOK_FAILED', undefined, { cause: error });
    if (!isResidentError(error)) log.error({ event: 'edge-error', err: error }, 'unexpected error at the HTTP edge');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    write(edge, req, res, { kind: 'error', error: failure, cookie: null }, false);
    edge.metrics?.observeRequest(res.statusCode, (performance.now() - started) / 1000, failure.code);
  }
}

/** The fixed body of an answer; a streamed one is pumped after the head (./http/stream-response.ts). */
function write(edge: Edge, req: IncomingMessage, res: ServerResponse, outcome: Outcome, secure: boolean): void {
  const headers: string[] = [];
  let status: number;
  let body: Uint8Array | string | null = null;
  let stream: StreamedBody | null = null;
  if (outcome.kind === 'error') {
    status = outcome.error.status || 500;
    body = outcome.error.publicMessage;
    headers.push('content-type', TEXT, 'cache-control', 'no-store');
    if (status === 503) headers.push('retry-after', '1');
    // A refused body is not read: the connection closes after the answer instead of draining it.
    if (outcome.error.code === 'RESIDENT_ERR_BODY_TOO_LARGE') headers.push('connection', 'close');
  } else {
    status = outcome.status;
    if (typeof outcome.body === 'string') body = outcome.body;
    else if (outcome.body instanceof ArrayBuffer) body = new Uint8Array(outcome.body);
    else if (outcome.body) stream = outcome.body;
    else if (status >= 500) body = 'Internal Server Error';
    for (let i = 0; i < outcome.headers.length; i += 2) {
      // The worker already dropped these; checked again here because a hook runs in that
      // worker and can patch the builtins its filter uses: the session cookie and the framing
      // are decided on this thread, whatever the worker says.
      const name = outcome.headers[i]!.toLowerCase();
      const value = outcome.headers[i + 1]!;
      if (HOP_BY_HOP.has(name) || (name === 'set-cookie' && setsCookieNamed(value, edge.cookie.name))) continue;
      headers.push(name, value);
    }
  }
  // The worker has dropped the hook's framing headers: the length said here is the body's own.
  if (body !== null) headers.push('content-length', String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength));
  if (outcome.cookie && 'set' in outcome.cookie) headers.push('set-cookie', edge.setCookie(outcome.cookie.set, secure));
  else if (outcome.cookie) headers.push('set-cookie', expiredSessionCookie(edge.cookie, secure));
  const source = stream && pulledFrom(edge.pool, stream);
  try {
    res.writeHead(status, headers);
  } catch (error) {
    // The worker checks every header a hook gave; this is the last line of defence.
    edge.log.error({ event: 'edge-error', err: error }, 'cannot write the response head: answering 500');
    source?.cancel();
    writeFailure(res);
    return;
  }
  if (!source) {
    res.end(req.method === 'HEAD' ? undefined : (body ?? undefined));
    return;
  }
  streamBody(req, res, source, (cut) => {
    // A shutdown stops the threads after the suspends: open streams (server-sent events) are
    // cut then by design, not failures an operator must be woken for.
    if (edge.sessions.closing) edge.log.info({ event: 'stream-cut', code: cut.code }, 'an open response body was cut by the shutdown');
    else edge.log.error({ event: 'stream-error', code: cut.code, err: { message: cut.message } }, 'the response body failed after its head was sent: connection closed');
  });
}

/** A clean 500 when nothing was sent yet; otherwise the connection cannot be framed any more. */
function writeFailure(res: ServerResponse): void {
  const text = ErrorCodes.RESIDENT_ERR_HOOK_FAILED.message;
  try {
    if (res.headersSent) throw new Error('head already sent');
    res.writeHead(500, 'Internal Server Error', ['content-type', TEXT, 'cache-control', 'no-store', 'content-length', String(Buffer.byteLength(text))]);
    res.end(text);
  } catch {
    res.destroy();
  }
}
