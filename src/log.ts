/**
 * Structured logs (pino). A session is identified by a salted hash of its ID, never by the ID
 * itself (./id-hash.ts).
 */
import pino, { type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { ResidentConfig } from './config.ts';

export type { Logger };

/**
 * What code that may run on any thread logs through: pino's logger on the main thread, and on
 * an edge thread a sink that hands each line to the main thread's logger (src/edge/thread-log.ts).
 */
export interface Log {
  debug(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
}
export { hashId, ID_HASH_SALT } from './id-hash.ts';

/**
 * JSON lines for log collectors; readable, coloured lines for a person at a terminal
 * (`log.format` "auto" decides by whether stdout is a TTY). `destination` (tests) takes JSON.
 */
export function createLogger(settings: ResidentConfig['log'], destination?: DestinationStream): Logger {
  const options = { level: settings.level, base: { name: 'resident' }, serializers: { err: serializeErr } };
  if (destination) return pino(options, destination);
  const readable = settings.format === 'pretty' || (settings.format === 'auto' && process.stdout.isTTY === true);
  if (readable) {
    return pino(options, pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', sync: true }));
  }
  return pino(options, pino.destination({ dest: 1, sync: false }));
}

/**
 * pino's `err` serializer, except for an error a worker thread already flattened
 * (src/edge/thread-log.ts): it arrives as a plain object, which pino would report as
 * `"type":"Object"`, losing the error's own type.
 */
function serializeErr(err: unknown): unknown {
  const flattened = typeof err === 'object' && err !== null && Object.getPrototypeOf(err) === Object.prototype && typeof (err as { type?: unknown }).type === 'string';
  return flattened ? err : pino.stdSerializers.err(err as Error);
}
