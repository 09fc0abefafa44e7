/**
 * The admin view: a JSON API and a small page under `admin.path`, on only when `admin.token`
 * is set. Every API call needs `Authorization: Bearer <token>`; the page itself holds no data
 * and asks for the token, which it keeps in a variable only (never in storage another page of
 * the origin could read) and sends with each call (a header that browsers never attach on
 * their own, so no cross-site request can act as the operator).
 *
 * A full session ID is never shown: it is the credential. Sessions are listed with a masked
 * ID (its first 4 characters) and a handle, the salted hash that log lines carry, which names
 * the session for the actions and is useless as a cookie. A handle resolves only after a
 * listing of this process has shown it (the last MAX_HANDLES are remembered).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ContextPool } from '../contexts/pool.ts';
import { storedInfo, type SessionInfo } from '../sessions/index.ts';
import type { SessionsView } from '../edge/sessions-view.ts';
import type { RequestTarget } from '../http/target.ts';
import { hashId, type Log } from '../log.ts';
import type { ContextStore } from '../stores/store.ts';
import { ADMIN_CSS, ADMIN_JS, adminPage } from './admin-page.ts';
import { bearerCheck } from './auth.ts';
import type { Metrics } from './metrics.ts';
import { send, sendJson, type OpsRoute } from './respond.ts';

/** Handles remembered for actions; the oldest are forgotten beyond this. */
const MAX_HANDLES = 100_000;
const DEFAULT_PAGE = 100;
const MAX_PAGE = 1_000;

export interface AdminSources {
  path: string;
  token: string;
  sessions: SessionsView;
  pool: ContextPool;
  store: ContextStore;
  log: Log;
  /** Served at `${path}metrics` when metrics have no port of their own. */
  metrics: Metrics | null;
  /** The cluster (cluster.enabled): this node, its lease, and the nodes alive in the store. */
  cluster?: () => Promise<unknown>;
}

/** What the admin API shows of a session. */
interface SessionView {
  handle: string;
  maskedId: string;
  userId: string | null;
  clientIp: string;
  state: SessionInfo['state'];
  createdAt: string;
  lastActivityAt: string;
  workerId: number | null;
  requests: number | null;
  mementoBytes: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function adminRoutes(sources: AdminSources): OpsRoute {
  const { path: base, sessions, pool, store, log } = sources;
  const authorized = bearerCheck(sources.token);
  const handles = new Map<string, string>();
  const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

  /** The handle of `id`, remembered (most recent last) so actions and cursors can name it. */
  const handleOf = (id: string): string => {
    const handle = hashId(id);
    handles.delete(handle);
    handles.set(handle, id);
    if (handles.size > MAX_HANDLES) handles.delete(handles.keys().next().value!);
    return handle;
  };

  const view = (info: SessionInfo): SessionView => {
    return {
      handle: handleOf(info.id),
      maskedId: `${info.id.slice(0, 4)}…`,
      userId: info.userId,
      clientIp: info.clientIp,
      state: info.state,
      createdAt: new Date(info.createdAt).toISOString(),
      lastActivityAt: new Date(info.lastActivityAt).toISOString(),
      workerId: info.workerId,
      requests: info.requests,
      mementoBytes: info.mementoBytes,
    };
  };

  const idOf = (handle: string): string => {
    const id = handles.get(handle);
    if (!id) throw new HttpError(404, 'unknown session handle: list the sessions again');
    return id;
  };

  const pageSize = (url: URL): number => {
    const text = url.searchParams.get('limit');
    if (text === null) return DEFAULT_PAGE;
    const limit = Number(text);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw new HttpError(400, `limit must be a whole number from 1 to ${MAX_PAGE}`);
    return limit;
  };

  /** Live sessions, least recently active first; the cursor is a position in that order. */
  const listLive = async (url: URL) => {
    const limit = pageSize(url);
    const start = Number(url.searchParams.get('cursor') ?? 0);
    if (!Number.isInteger(start) || start < 0) throw new HttpError(400, 'cursor must be the "next" value of the previous page');
    const page = (await sessions.list({ state: 'live', start, limit })).map(view);
    const { live, suspending } = sessions.stats;
    const next = start + page.length < live + suspending ? String(start + page.length) : null;
    return { sessions: page, next };
  };

  /** Suspended sessions, from the store in ID order (those live in this process are skipped). */
  const listSuspended = async (url: URL) => {
    const limit = pageSize(url);
    const after = url.searchParams.get('cursor') ?? undefined;
    const stored = await store.list({ after, limit });
    const page: SessionView[] = [];
    for (const summary of stored) {
      const known = await sessions.info(summary.id);
      if (known && known.state !== 'suspended') continue;
      page.push(view(known ? { ...known, mementoBytes: summary.mementoBytes } : storedInfo(summary)));
    }
    // The store pages by ID, but a cursor holding an ID would show one: it holds the handle
    // of the last ID read instead, resolved back when the next page is asked for.
    const last = stored[stored.length - 1];
    return { sessions: page, next: stored.length === limit && last ? handleOf(last.id) : null };
  };

  const overview = () => {
    const { live, suspending: _suspending, suspendedKnown, inFlight: _inFlight, unproven, ...counters } = sessions.stats;
    return {
      store: store.kind,
      // Unproven: their client has not presented the cookie back yet (a flood shows here).
      sessions: { live, unproven, proven: Math.max(0, live - unproven), suspendedKnown },
      workers: pool.workerLoad(),
      counters,
    };
  };

  const api = async (method: string, rest: string, url: URL, res: ServerResponse): Promise<void> => {
    let segments: string[];
    try {
      segments = rest.split('/').map((segment) => decodeURIComponent(segment));
    } catch {
      throw new HttpError(400, 'the path has a malformed %-escape');
    }
    const [resource, key, action] = segments;
    if (method === 'GET' && rest === 'overview') return sendJson(res, 200, overview());
    if (method === 'GET' && rest === 'sources') return sendJson(res, 200, { sources: sessions.sourcesOverBudget() });
    if (method === 'GET' && rest === 'cluster' && sources.cluster) return sendJson(res, 200, await sources.cluster());
    if (method === 'GET' && rest === 'sessions') {
      const state = url.searchParams.get('state') ?? 'live';
      if (state === 'live') return sendJson(res, 200, await listLive(url));
      if (state === 'suspended') {
        const cursor = url.searchParams.get('cursor');
        if (cursor !== null) url.searchParams.set('cursor', idOf(cursor));
        return sendJson(res, 200, await listSuspended(url));
      }
      throw new HttpError(400, 'state must be "live" or "suspended"');
    }
    if (resource === 'users' && key && segments.length === 3) {
      if (method === 'GET' && action === 'sessions') {
        return sendJson(res, 200, { userId: key, sessions: (await sessions.sessionsOfUser(key)).map(view) });
      }
      if (method === 'POST' && action === 'close') {
        const closed = await sessions.closeUser(key, { by: 'admin' });
        log.info({ event: 'admin-close-user', userId: key, closed }, 'admin closed every session of a user');
        return sendJson(res, 200, { userId: key, closed });
      }
    }
    if (resource === 'sessions' && key && segments.length === 3 && method === 'POST') {
      const id = idOf(key);
      if (action === 'close') {
        const closed = await sessions.closeSession(id, 'admin');
        if (!closed) throw new HttpError(404, 'no such session (closed or expired meanwhile)');
        return sendJson(res, 200, { handle: key, closed: true });
      }
      if (action === 'suspend') {
        const outcome = await sessions.suspendSession(id);
        if (outcome === 'busy') throw new HttpError(409, 'the session has a request in flight or a suspend under way: try again');
        if (outcome === 'not-live') throw new HttpError(409, 'the session is not live');
        if (outcome === 'failed') throw new HttpError(500, 'the suspend failed: the context stays live (see the log)');
        if (outcome === 'lost') throw new HttpError(500, 'the suspend failed and the context was lost with its worker thread: the session resumes from its previous memento, if any (see the log)');
        // Unproven and not kept (ctx.keep()): it left memory without a record.
        if (outcome === 'dropped') return sendJson(res, 200, { handle: key, state: 'dropped' });
        return sendJson(res, 200, { handle: key, state: 'suspended' });
      }
    }
    throw new HttpError(404, 'no such admin API route');
  };

  const claims = (path: string) => path.startsWith(base) || path === base.slice(0, -1);
  const handle = async ({ path, search }: RequestTarget, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // HEAD is answered as GET, with the same status and headers; send() leaves the body out.
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    if (path === base.slice(0, -1)) return send(res, 308, 'text/plain; charset=utf-8', '', { location: base });
    const rest = path.slice(base.length);
    // The page and its assets hold no data: they load without the token and ask for it.
    if (method === 'GET') {
      if (rest === '') return sendPage(res, 'text/html; charset=utf-8', adminPage(base), csp);
      if (rest === 'admin.js') return sendPage(res, 'text/javascript; charset=utf-8', ADMIN_JS, csp);
      if (rest === 'admin.css') return sendPage(res, 'text/css; charset=utf-8', ADMIN_CSS, csp);
    }
    if (!authorized(req)) {
      return sendJson(res, 401, { error: 'a valid "Authorization: Bearer <admin.token>" header is required' }, { 'www-authenticate': 'Bearer realm="resident"' });
    }
    try {
      if (rest === 'metrics' && sources.metrics && method === 'GET') {
        send(res, 200, sources.metrics.contentType, await sources.metrics.text());
      } else if (rest.startsWith('api/')) {
        await api(method, rest.slice(4), new URL(search, 'http://admin/'), res);
      } else {
        throw new HttpError(404, 'no such admin route');
      }
    } catch (error) {
      if (error instanceof HttpError) sendJson(res, error.status, { error: error.message });
      else {
        log.error({ event: 'admin-error', err: error }, 'admin API call failed');
        sendJson(res, 500, { error: 'the call failed; see the server log' });
      }
    }
  };
  return { claims, handle };
}

function sendPage(res: ServerResponse, contentType: string, body: string, csp: string): void {
  send(res, 200, contentType, body, { 'content-security-policy': csp, 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' });
}
