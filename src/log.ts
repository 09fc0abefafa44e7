/**
 * Structured logs (pino). A session is identified by a salted hash of its ID, never by the ID
 * itself (RELIABILITY.md A13): the salt is random per process, so a hash correlates lines of
 * one run and is useless for replaying a cookie.
 */
import { createHash, randomBytes } from 'node:crypto';
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

const salt = randomBytes(16);

/** The salt, for worker threads (ctx.idHash must match the main thread's log lines). */
export const ID_HASH_SALT = salt.toString('hex');

export function hashId(id: string, withSalt: Uint8Array = salt): string {
  return createHash('sha256').update(withSalt).update(id).digest('base64url').slice(0, 16);
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { name: 'resident' } }, destination ?? pino.destination({ dest: 1, sync: false }));
}
