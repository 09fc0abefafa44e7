/**
 * Starting Resident from code (tests, embedding in an app's own process): the configuration as
 * an object shaped like config.json (validated the same way; relative paths are resolved
 * against `baseDir`, by default the working folder) or the path of a config file. The server
 * installs no signal handlers: the embedding process decides when to `close()` it (the
 * `resident` command handles SIGINT and SIGTERM).
 */
import { loadConfigFile, resolveConfig, type ResidentConfigInput } from './config.ts';
import { startServer, type ResidentServer, type StartOptions } from './server.ts';

export interface CreateServerOptions extends Omit<StartOptions, 'config' | 'clock'> {
  /** The folder relative paths of an object configuration are resolved against (default: process.cwd()). */
  baseDir?: string;
}

export interface Server extends ResidentServer {
  /**
   * Stops accepting, finishes the requests in flight, suspends every live context into the
   * store and stops the worker threads (shutdown(), under the name servers use). `lost`
   * counts the contexts whose suspension failed.
   */
  close(): Promise<{ suspended: number; lost: number }>;
}

export async function createServer(config: ResidentConfigInput | string = {}, options: CreateServerOptions = {}): Promise<Server> {
  const { baseDir = process.cwd(), ...start } = options;
  const resolved = typeof config === 'string' ? loadConfigFile(config) : resolveConfig(config, baseDir);
  const server = await startServer({ ...start, config: resolved });
  return Object.assign(server, { close: () => server.shutdown() });
}
