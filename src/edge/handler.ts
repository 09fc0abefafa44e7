/**
 * The HTTP edge, on every worker thread: static files, the session cookie, the client IP, the
 * session's home (this thread, or another one reached over the mesh), and writing the answer.
 * Everything about a session's life is in ../sessions/, behind one call, `serve`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ResidentConfig } from '../config.ts';
import type { StreamedBody } from '../contexts/protocol.ts';
import type { Outcome } from '../sessions/index.ts';
import { ErrorCodes, ResidentError, isResidentError } from '../errors.ts';
import { readBody } from '../http/body.ts';
import { crossOriginRefusal } from '../http/origin-check.ts';
import { cameOverTls, clientIp, type TrustFunction } from '../http/client-ip.ts';
import { expiredSessionCookie, presentedSessionIds, setsCookieNamed, type CookieSettings } from '../http/cookies.ts';
import type { PublicFiles } from '../http/static.ts';
import { pulledFrom, streamBody, type StreamHost } from '../http/stream-response.ts';
import { parseTarget, type RequestTarget } from '../http/target.ts';
import { isHopByHop } from '../contexts/response-headers.ts';
import type { WireRequest } from '../contexts/protocol.ts';
import type { Log } from '../log.ts';
import type { ClusterEdge } from '../cluster/edge.ts';
import { FORWARD_HEADER, withoutForwardHeader, type Forwarded } from '../cluster/forward-auth.ts';
import { lowerCase } from '../primordials.ts';

/** What the edge of one thread needs; built once when the thread starts. */
export interface Edge {
  config: ResidentConfig;
  log: Log;
  /**
   * Serves a dynamic request in its session (here or on its home thread). `trusted`: it came
   * through a trusted proxy, whose connections mix clients.
   */
  serve(presented: string[], clientIp: string, request: WireRequest, trusted: boolean): Promise<Outcome>;
  /** Where a streamed response body is pulled from (this thread or the one that holds it). */
  streams: StreamHost;
  /** True once shutdown began. */
  closing(): boolean;
  cookie: CookieSettings;
  setCookie: (id: string, secure: boolean) => string;
  trust: TrustFunction | null;
  files: PublicFiles;
  /** The health probes and the admin view, answered by the main thread, before static files and hooks. */
  ops: { claims(path: string): boolean; answer(target: RequestTarget, req: IncomingMessage, res: ServerResponse): Promise<void> } | null;
  /** Resolves once the lines this thread logged are written (undefined: none pending). */
  logsDelivered(): Promise<void> | undefined;
  /** Counts each request's status and duration, when metrics are on. */
  observe: ((status: number, seconds: number, code: string | undefined) => void) | null;
  /** host:port of the listener: the host of request.url for an HTTP/1.0 request without Host. */
  listenHost: string;
  /** The cluster's side of the edge (forwarding, the lease, the routing cookie); null on one node. */
  cluster: ClusterEdge | null;
}

const TEXT = 'text/plain; charset=utf-8';
/** Forwards of one request at most: more means the nodes' views of its owner disagree (G3). */
const MAX_HOPS = 2;

/**
 * @param expectsContinue the client sent `Expect: 100-continue` and waits for it to send its body
 * @param forwarded set on the cluster's private listener: another node forwarded this request,
 *   and vouched (signed) for its client's address and connection
 */
export async function handle(edge: Edge, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean, forwarded?: Forwarded): Promise<void> {
  const { config, log } = edge;
  const started = edge.observe ? performance.now() : 0;
  try {
    // Parsed once: the ops routes, the static files and the hook all see this path.
    const target = parseTarget(req, edge.listenHost);
    if (target.path === '*') {
      // OPTIONS * asks about the server as a whole: no hook has a path to route it on.
      res.writeHead(204, { 'cache-control': 'no-store' });
      res.end();
      return;
    }
    if (!forwarded && edge.ops?.claims(target.path)) return await edge.ops.answer(target, req, res);
    if (!forwarded && (await edge.files.serve(target.path, req, res))) return;
    const secure = config.sessions.secureCookie || (forwarded ? forwarded.secure : cameOverTls(req, edge.trust));
    // The scheme is how the request reached us, whatever an absolute-form target said. The
    // worker parses this URL again (`new URL()` in toRequest) and answers 400 if it cannot, a
    // last safety net behind parseTarget.
    const url = `${secure ? 'https' : 'http'}://${target.host}${target.path}${target.search}`;
    // Before the body is read and before any hook: the node a request is forwarded to trusts this check.
    const crossOrigin = forwarded ? null : crossOriginRefusal(req, config.csrf, target.host, secure, edge.trust);
    if (crossOrigin) {
      log.debug({ event: 'csrf-refused', code: 'RESIDENT_ERR_CSRF', reason: crossOrigin }, 'a request from another origin: 403');
      throw new ResidentError('RESIDENT_ERR_CSRF');
    }
    const body = await readBody(req, config.limits.maxBodySize, expectsContinue ? () => res.writeContinue() : undefined);
    // A forwarding header is the cluster's alone: a hook never sees one, whoever sent it (G2).
    const rawHeaders = req.headers[FORWARD_HEADER] === undefined ? req.rawHeaders : withoutForwardHeader(req.rawHeaders);
    const wire: WireRequest = { method: req.method ?? 'GET', url, headers: rawHeaders.join('\n'), body };
    const ip = forwarded ? forwarded.clientIp : clientIp(req, edge.trust);
    // A byte body goes to the session's home thread by transfer: in a cluster a copy is kept in
    // case the request must be forwarded to another node after all.
    const kept = edge.cluster && body instanceof ArrayBuffer ? body.slice(0) : undefined;
    let outcome = await edge.serve(
      presentedSessionIds(req.headers.cookie, edge.cookie.name),
      ip,
      wire,
      forwarded ? false : edge.trust !== null && edge.trust(req.socket.remoteAddress ?? '', 0),
    );
    if (outcome.kind === 'elsewhere') {
      const hops = (forwarded?.hops ?? 0) + 1;
      if (!edge.cluster || hops > MAX_HOPS) {
        // Nodes keep sending it on (their views of the owner disagree for a moment): stop (G3).
        log.warn({ event: 'forward-loop', owner: outcome.owner, hops: hops - 1 }, 'a forwarded request reached a node that does not hold its session either: 508');
        outcome = { kind: 'error', error: new ResidentError('RESIDENT_ERR_FORWARD_LOOP'), cookie: null };
      } else {
        edge.cluster.forwarded();
        try {
          await edge.cluster.forwarder.forward(outcome, kept ? { ...wire, body: kept } : wire, { clientIp: ip, secure, hops }, req, res);
        } catch (error) {
          edge.cluster.forwardFailed(outcome.owner, error as ResidentError);
          throw error;
        }
        edge.observe?.(res.statusCode, (performance.now() - started) / 1000, undefined);
        return;
      }
    } else if (edge.cluster && !edge.cluster.serving()) {
      // The lease ran out while the hook ran: another node may hold the session by now, so this
      // node's answer is not given (the client retries and finds the owner).
      outcome = { kind: 'error', error: new ResidentError('RESIDENT_ERR_NO_LEASE'), cookie: null };
    }
    // What the request logged is written before its client has the answer.
    const logged = edge.logsDelivered();
    if (logged) await logged;
    write(edge, req, res, outcome, secure);
    edge.observe?.(res.statusCode, (performance.now() - started) / 1000, outcome.kind === 'error' ? outcome.error.code : undefined);
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
    // Answered already (a dying thread's last words): let that answer reach its socket.
    if (res.writableEnded) return;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const logged = edge.logsDelivered();
    if (logged) await logged;
    write(edge, req, res, { kind: 'error', error: failure, cookie: null }, false);
    edge.observe?.(res.statusCode, (performance.now() - started) / 1000, failure.code);
  }
}

/** The fixed body of an answer; a streamed one is pumped after the head (./http/stream-response.ts). */
function write(edge: Edge, req: IncomingMessage, res: ServerResponse, outcome: Outcome, secure: boolean): void {
  // Answered already: the thread is dying and told its open requests so (./last-words.ts).
  if (res.headersSent) return;
  const headers: string[] = [];
  let status: number;
  let body: Uint8Array | string | null = null;
  let stream: StreamedBody | null = null;
  if (outcome.kind === 'elsewhere') {
    // Only handle() forwards; an outcome that reaches here unforwarded is a server fault.
    status = 500;
    body = ErrorCodes.RESIDENT_ERR_HOOK_FAILED.message;
    headers.push('content-type', TEXT, 'cache-control', 'no-store');
  } else if (outcome.kind === 'error') {
    status = outcome.error.status || 500;
    body = outcome.error.publicMessage;
    headers.push('content-type', TEXT, 'cache-control', 'no-store');
    if (status === 503 || status === 429) headers.push('retry-after', '1');
    // A refused body is not read: the connection closes after the answer instead of draining it.
    if (outcome.error.code === 'RESIDENT_ERR_BODY_TOO_LARGE' || outcome.error.code === 'RESIDENT_ERR_CSRF') headers.push('connection', 'close');
  } else {
    status = outcome.status;
    if (typeof outcome.body === 'string') body = outcome.body;
    else if (outcome.body instanceof ArrayBuffer) body = new Uint8Array(outcome.body);
    else if (outcome.body) stream = outcome.body;
    else if (status >= 500) body = 'Internal Server Error';
    for (let i = 0; i < outcome.headers.length; i += 2) {
      // The context already dropped these; checked again here, through builtins taken before
      // any hook loaded (../primordials.ts), because the outcome may come over the mesh from another thread and a
      // hook can patch the builtins a filter calls: the session cookie and the framing are
      // decided here. (A hook shares this thread and could patch node:http itself: this guards
      // against headers, not against code that rewrites Node.)
      const name = lowerCase(String(outcome.headers[i]));
      const value = String(outcome.headers[i + 1]);
      if (isHopByHop(name) || (name === 'set-cookie' && setsCookieNamed(value, edge.cookie.name))) continue;
      headers.push(name, value);
    }
  }
  // The worker has dropped the hook's framing headers: the length said here is the body's own.
  if (body !== null) headers.push('content-length', String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength));
  if (outcome.cookie && 'set' in outcome.cookie) {
    headers.push('set-cookie', edge.setCookie(outcome.cookie.set, secure));
    // Which node holds the session, for a balancer to send the client straight there.
    if (edge.cluster) headers.push('set-cookie', edge.cluster.routingCookie(secure));
  }
  else if (outcome.cookie) headers.push('set-cookie', expiredSessionCookie(edge.cookie, secure));
  const source = stream && pulledFrom(edge.streams, stream);
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
    if (edge.closing()) edge.log.info({ event: 'stream-cut', code: cut.code }, 'an open response body was cut by the shutdown');
    else edge.log.error({ event: 'stream-error', code: cut.code, err: { type: cut.thrownType, code: cut.code, message: cut.message } }, 'the response body failed after its head was sent: connection closed');
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
