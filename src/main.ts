/**
 * Command line: `tsx src/main.ts [--config PATH]`. PORT overrides the configured port.
 * Exit codes: 0 clean stop, 1 a suspend was lost at shutdown, 2 invalid configuration or
 * hooks that cannot load (nothing listens then).
 */
import { parseArgs } from 'node:util';
import { loadConfigFile } from './config.ts';
import { isResidentError } from './errors.ts';
import { startServer, type ResidentServer } from './server.ts';

async function main(): Promise<number | undefined> {
  let configPath = 'config.json';
  try {
    const { values } = parseArgs({ options: { config: { type: 'string' } }, strict: true });
    configPath = values.config ?? configPath;
  } catch (error) {
    console.error(`resident: ${(error as Error).message}\nusage: npm start -- [--config PATH]`);
    return 2;
  }
  let config;
  try {
    const port = process.env.PORT;
    // A PORT that is not a whole number is handed on as text, so validation names it.
    config = loadConfigFile(configPath, port === undefined ? {} : { port: /^\d+$/.test(port) ? Number(port) : port });
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
      processTimeout: config.sessions.processTimeout,
      cookieTimeout: config.sessions.cookieTimeout,
    },
    `Resident listening on ${server.url}`,
  );
  if (stopRequested) stop(stopRequested);
  return undefined;
}

const code = await main();
if (code !== undefined) process.exit(code);
