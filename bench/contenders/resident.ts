/**
 * Resident with the bench hooks. Environment: THREADS (default 2), STORE (memory | sqlite |
 * redis | postgres), STORE_PATH (sqlite), STORE_URL, STORE_PREFIX (redis), STORE_TABLE
 * (postgres), PROCESS_TIMEOUT (default 480m), MAX_CONTEXTS (default 2,000,000), METRICS (0:
 * off; on by default, as in production). USER_DEFAULTS=1 (workload i): every sessions.* setting at
 * the default users get (maxContexts, maxUnprovenPerIp, maxQueuedRequests, timeouts), but
 * maxContexts when MAX_CONTEXTS is set.
 */
import { join, resolve } from 'node:path';
import { resolveConfig } from '../../src/config.ts';
import { startServer } from '../../src/server.ts';
import { memory, serveControl } from './control.ts';

const root = resolve(import.meta.dirname, '../..');
const env = process.env;
const benchSessions = {
  maxContexts: Number(env.MAX_CONTEXTS ?? 2_000_000),
  maxQueuedRequests: 1000,
  processTimeout: env.PROCESS_TIMEOUT ?? '480m',
  cookieTimeout: '480m',
  suspendEveryRequest: env.SUSPEND_EVERY === '1',
};
const userSessions = env.MAX_CONTEXTS ? { maxContexts: Number(env.MAX_CONTEXTS) } : {};
const config = resolveConfig(
  {
    host: '127.0.0.1',
    port: 0,
    publicDir: join(root, 'bench/no-public-dir'),
    sessions: env.USER_DEFAULTS === '1' ? userSessions : benchSessions,
    workers: { threads: Number(env.THREADS ?? 2) },
    hooks: { onConnection: join(root, 'bench/hooks/onConnection.ts'), onSessionSuspend: join(root, 'bench/hooks/onSessionSuspend.ts') },
    store: {
      kind: (env.STORE ?? 'memory') as 'memory' | 'sqlite' | 'redis' | 'postgres',
      path: env.STORE_PATH,
      url: env.STORE_URL,
      prefix: env.STORE_PREFIX,
      table: env.STORE_TABLE,
    },
    limits: { shutdownTimeout: '10m' },
    log: { level: 'warn' },
    // Metrics are only collected where they can be scraped: a listener of their own (any port).
    metrics: env.METRICS === '0' ? { enabled: false } : { port: 0 },
  },
  root,
);
const server = await startServer({ config });
serveControl(server.port, {
  async stats(command) {
    const gc = command.gc === true;
    if (gc) (globalThis as { gc?: () => void }).gc?.();
    const workers = await server.pool.workerStats({ gc });
    const { live, suspending, suspendedKnown, ...counters } = server.sessions.stats;
    return { sessions: live + suspending + suspendedKnown, live, ...memory(), workers, counters };
  },
  async shutdown() {
    const started = performance.now();
    const result = await server.shutdown();
    return { ms: performance.now() - started, ...result };
  },
});
