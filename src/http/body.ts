import { isUtf8 } from 'node:buffer';
import type { IncomingMessage } from 'node:http';
import { joinedBytes } from '../bytes.ts';
import { ResidentError, isResidentError } from '../errors.ts';

/**
 * The request body: a string when it is text in UTF-8 (see asText), otherwise one ArrayBuffer,
 * or null for none. Either is copied to the worker, never transferred: a request the sessions
 * retry (its context's thread died) sends the same body again. Over `limit` bytes is refused with 413 before or while reading (RELIABILITY.md D6).
 * `goAhead` runs once the body is going to be read, after the declared length passed: the
 * edge sends `100 Continue` there, so a client told 413 never sent its body. A client that
 * goes away mid-body rejects with RESIDENT_ERR_CLIENT_ABORTED.
 */
export async function readBody(req: IncomingMessage, limit: number, goAhead?: () => void): Promise<ArrayBuffer | string | null> {
  if (req.method === 'GET' || req.method === 'HEAD') {
    req.resume();
    return null;
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new ResidentError('RESIDENT_ERR_BODY_TOO_LARGE');
  goAhead?.();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new ResidentError('RESIDENT_ERR_BODY_TOO_LARGE');
      chunks.push(chunk);
    }
  } catch (error) {
    if (!isResidentError(error) && wentAway(req, error)) throw new ResidentError('RESIDENT_ERR_CLIENT_ABORTED', undefined, { cause: error });
    throw error;
  }
  if (size === 0) return null;
  if (isText(req.headers['content-type'])) {
    const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    if (isUtf8(bytes)) return bytes.toString('utf8');
  }
  return joinedBytes(chunks, size);
}

/** Media types whose bodies are text; a declared charset other than UTF-8 keeps the bytes. */
const TEXT_TYPE = /^(?:text\/[^;]+|application\/(?:json|x-www-form-urlencoded|xml|javascript|graphql|[^;]*\+(?:json|xml)))\s*(?:;|$)/i;
const CHARSET = /;\s*charset\s*=\s*"?([^";\s]+)/i;

/**
 * A text body crosses to the worker as a string: one cloned string is cheaper than a buffer,
 * and `request.text()` / `json()` in the hook read it without decoding again. Only a body whose
 * bytes are valid UTF-8 (checked, so nothing is replaced) and whose type says it is UTF-8 text
 * becomes a string: the worker's Request encodes it back to exactly the same bytes
 * (Buffer#toString keeps a byte-order mark, as the bytes had it).
 */
function isText(contentType: string | undefined): boolean {
  if (contentType === undefined || !TEXT_TYPE.test(contentType)) return false;
  const charset = CHARSET.exec(contentType)?.[1];
  return charset === undefined || /^utf-?8$/i.test(charset);
}

/** node:http fails a request whose connection closed before its body ended with ECONNRESET 'aborted'. */
function wentAway(req: IncomingMessage, error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (!req.complete && req.socket.destroyed);
}
