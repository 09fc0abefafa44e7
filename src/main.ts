/**
 * Command line: `tsx src/main.ts [--config PATH]`. PORT overrides the configured port.
 * Exit codes: 0 clean stop, 1 a suspend was lost at shutdown, 2 invalid configuration or
 * hooks that cannot load (nothing listens then).
 */
import { parseArgs } from 'node:util';
import { loadConfigFile } from './config.ts';
import { isResidentError } from './errors.ts';
import { startServer } from './server.ts';

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
  let server;
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
      processTimeout: config.sessions.processTimeout,
      cookieTimeout: config.sessions.cookieTimeout,
    },
    `Resident listening on ${server.url}`,
  );
  const stop = (signal: string) => {
    server.log.info({ event: 'stopping', signal }, 'shutting down');
    server.shutdown().then(
      ({ lost }) => process.exit(lost > 0 ? 1 : 0),
      (error) => {
        server.log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // Ctrl-C reaches the whole `npm start` process group, so the signal may come twice:
  // shutdown() is idempotent and the second signal just waits for the first.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  return undefined;
}

const code = await main();
if (code !== undefined) process.exit(code);
