/**
 * Probes for orchestrators and load balancers. /healthz: the process answers (liveness).
 * /readyz: every worker thread is up and the store answers (readiness); 503 otherwise, and
 * while shutting down, so a balancer stops sending before the server stops answering.
 * Neither creates a session or sets a cookie, and neither says more than up or down: details
 * of a failure go to the log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { withDeadline } from '../contexts/deadline.ts';
import type { ContextPool } from '../contexts/pool.ts';
import type { Logger } from '../log.ts';
import type { ContextStore } from '../stores/store.ts';
import { sendJson, type OpsRoute } from './respond.ts';

/** A store that does not answer within this is not ready (RELIABILITY.md E6: bounded time). */
const STORE_PING_TIMEOUT_MS = 1_000;

export interface HealthSources {
  pool: ContextPool;
  store: ContextStore;
  log: Logger;
  stopping: () => boolean;
}

export function healthRoutes(sources: HealthSources): OpsRoute {
  // Probes come every few seconds: an outage is logged when it begins and when it ends, not
  // once per probe.
  let storeDown = false;
  const claims = (path: string) => path === '/healthz' || path === '/readyz';
  const handle = async (path: string, _req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (path === '/healthz') return sendJson(res, 200, { status: 'ok' });
    const workers = { up: sources.pool.threadIds.length, expected: sources.pool.size };
    const store = await withDeadline(sources.store.ping(), STORE_PING_TIMEOUT_MS, 'RESIDENT_ERR_STORE_FAILED', 'the store ping').then(
      () => 'ok' as const,
      (error: Error) => error.message || 'unreachable',
    );
    if (store !== 'ok' && !storeDown) sources.log.error({ event: 'store-unreachable', err: { message: store } }, 'readiness: the store does not answer');
    if (store === 'ok' && storeDown) sources.log.info({ event: 'store-reachable' }, 'readiness: the store answers again');
    storeDown = store !== 'ok';
    const stopping = sources.stopping();
    const ready = !stopping && workers.up === workers.expected && store === 'ok';
    sendJson(res, ready ? 200 : 503, {
      status: ready ? 'ready' : stopping ? 'stopping' : 'not ready',
      workers,
      store: { kind: sources.store.kind, status: store === 'ok' ? 'ok' : 'unreachable' },
    });
  };
  return { claims, handle };
}
