/**
 * The admin bearer token check. Both sides are hashed to a fixed length first, so the
 * comparison is constant-time whatever the length of what the client sent (timingSafeEqual
 * itself requires equal lengths, and comparing lengths first would leak the token's length).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

const digest = (text: string) => createHash('sha256').update(text).digest();

export function bearerCheck(token: string): (req: IncomingMessage) => boolean {
  const expected = digest(token);
  return (req) => {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer[ ]+(\S+)[ ]*$/i.exec(header);
    // Always compare, even without a token, so a missing header takes the same path.
    const matches = timingSafeEqual(digest(match?.[1] ?? ''), expected);
    return match !== null && matches;
  };
}
