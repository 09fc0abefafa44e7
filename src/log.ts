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
    return pino(options, pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', sync: true, messageFormat: oneLine }));
  }
  return pino(options, pino.destination({ dest: 1, sync: false }));
}

/**
 * A message on one line: pino-pretty keeps a message's line breaks, so text a hook logged as a
 * client sent it could start a line of its own that reads as the server's. Line breaks are
 * shown escaped; the other control characters (terminal escapes) are dropped, as pino-pretty
 * drops them when it formats the message itself.
 */
function oneLine(line: Record<string, unknown>, key: string): string {
  const message = line[key];
  if (typeof message !== 'string' && typeof message !== 'number' && typeof message !== 'boolean') return '';
  return String(message).replace(/[\u0000-\u0008\u000A-\u001F\u007F-\u009F\u2028\u2029]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\u2028' || c === '\u2029' ? '\\n' : ''));
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
