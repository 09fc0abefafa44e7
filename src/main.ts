/**
 * Command line: `tsx src/main.ts [--config PATH]` (`npm start`; `resident start` in the package). PORT overrides the configured port, and
 * RESIDENT_ADMIN_TOKEN the admin token (a secret is better kept out of config.json).
 * Exit codes: 0 clean stop, 1 a suspend was lost at shutdown, 2 a Node.js older than 22.12,
 * invalid configuration, hooks that cannot load, a store that cannot open or a port that cannot
 * be listened on (startServer has stopped whatever it started: nothing listens then).
 */
// First, so an older Node.js is refused before any other module runs.
import './refuse-old-node.ts';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import ms from 'ms';
import { loadConfigFile, redactUrl, type ResidentConfig } from './config.ts';
import { isResidentError } from './errors.ts';
import { startServer, type ResidentServer } from './server.ts';

async function main(): Promise<number | undefined> {
  let configPath = 'config.json';
  try {
    const { values } = parseArgs({ options: { config: { type: 'string' } }, strict: true });
    configPath = values.config ?? configPath;
  } catch (error) {
    console.error(`resident: ${(error as Error).message}\nusage: npm start -- [--config PATH] (resident start [--config PATH])`);
    return 2;
  }
  let config;
  try {
    const { PORT: port, RESIDENT_ADMIN_TOKEN: token, RESIDENT_STORE_URL: storeUrl } = process.env;
    // A PORT that is not a whole number is handed on as text, so validation names it.
    config = loadConfigFile(configPath, {
      ...(port !== undefined && { port: /^\d+$/.test(port) ? Number(port) : port }),
      ...(token !== undefined && { 'admin.token': token }),
      ...(storeUrl !== undefined && { 'store.url': storeUrl }),
    });
  } catch (error) {
    console.error(`resident: ${(error as Error).message}`);
    return 2;
  }
  let server: ResidentServer | undefined;
  let stopRequested: string | undefined;
  const stop = (signal: string) => {
    if (!server) {
      // Still starting: shut down as soon as the server is up.
      stopRequested = signal;
      return;
    }
    const running = server;
    running.log.info({ event: 'stopping', signal }, 'shutting down');
    running.shutdown().then(
      ({ lost }) => process.exit(lost > 0 ? 1 : 0),
      (error) => {
        running.log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // Registered before anything listens, so no signal finds the default handler (which would
  // kill the process without suspending). Ctrl-C reaches the whole `npm start` process group,
  // so a signal may come twice: shutdown() is idempotent and the second just waits for it.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  try {
    server = await startServer({ config });
  } catch (error) {
    console.error(`resident: ${(error as Error).message}`);
    return isResidentError(error) ? 2 : 1;
  }
  server.log.info(
    {
      event: 'started',
      url: server.url,
      threads: config.workers.threads,
      store: config.store.kind,
      storePath: config.store.url || config.store.kind === 'memory' ? null : config.store.path,
      storeUrl: config.store.url ? redactUrl(config.store.url) : null,
      processTimeout: config.sessions.processTimeout,
      cookieTimeout: config.sessions.cookieTimeout,
      admin: server.adminUrl,
      metrics: server.metricsUrl,
    },
    banner(server, config),
  );
  if (stopRequested) stop(stopRequested);
  return undefined;
}

/** The startup line a person reads: where to go, where sessions are kept, and how long they live. */
function banner(server: ResidentServer, config: ResidentConfig): string {
  const duration = (millis: number, none: string) => (millis === 0 ? none : ms(millis, { long: true }));
  const { kind, url, path } = config.store;
  const store = kind === 'memory' ? 'memory (volatile)' : `${kind} at ${url ? redactUrl(url) : relative(process.cwd(), path) || '.'}`;
  const lines = [
    `Resident listening on ${server.url}`,
    `store ${store}, ${config.workers.threads} worker thread${config.workers.threads === 1 ? '' : 's'}`,
    `${config.sessions.processTimeout === 0 ? 'contexts are never suspended for idleness' : `contexts suspend after ${duration(config.sessions.processTimeout, '')} idle`}; cookies last ${duration(config.sessions.cookieTimeout, 'the browser session')}`,
  ];
  if (server.adminUrl) lines.push(`admin view at ${server.adminUrl}`);
  if (server.metricsUrl) lines.push(`metrics at ${server.metricsUrl}`);
  return lines.join(' · ');
}

const code = await main();
if (code !== undefined) process.exit(code);
