/**
 * A session in a log line is a salted hash of its ID, never the ID itself (RELIABILITY.md
 * A13): the salt is random per process, so a hash correlates the lines of one run and is
 * useless for replaying a cookie. Its own module, so a worker thread (ctx.idHash) gets the
 * hash without loading the logger.
 */
import { createHash, randomBytes } from 'node:crypto';

let salt: Uint8Array = randomBytes(16);

/** The salt, for worker threads (ctx.idHash and every thread's log lines must match the main thread's). */
export const ID_HASH_SALT = Buffer.from(salt).toString('hex');

/** A worker thread takes the main thread's salt, so that one session hashes alike in every line. */
export function setHashSalt(hex: string): void {
  salt = Buffer.from(hex, 'hex');
}

export function hashId(id: string, withSalt: Uint8Array = salt): string {
  return createHash('sha256').update(withSalt).update(id).digest('base64url').slice(0, 16);
}
