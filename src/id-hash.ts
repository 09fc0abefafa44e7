/**
 * A session in a log line is a salted hash of its ID, never the ID itself (RELIABILITY.md
 * A13): the salt is random per process, so a hash correlates the lines of one run and is
 * useless for replaying a cookie. Its own module, so a worker thread (ctx.idHash) gets the
 * hash without loading the logger.
 */
import { createHash, randomBytes } from 'node:crypto';

const salt = randomBytes(16);

/** The salt, for worker threads (ctx.idHash must match the main thread's log lines). */
export const ID_HASH_SALT = salt.toString('hex');

export function hashId(id: string, withSalt: Uint8Array = salt): string {
  return createHash('sha256').update(withSalt).update(id).digest('base64url').slice(0, 16);
}
