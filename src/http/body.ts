import type { IncomingMessage } from 'node:http';
import { joinedBytes } from '../bytes.ts';
import { ResidentError, isResidentError } from '../errors.ts';

/**
 * The request body as one ArrayBuffer (transferred, not copied, to the worker), or null for
 * none. Over `limit` bytes is refused with 413 before or while reading (RELIABILITY.md D6).
 * `goAhead` runs once the body is going to be read, after the declared length passed: the
 * edge sends `100 Continue` there, so a client told 413 never sent its body. A client that
 * goes away mid-body rejects with RESIDENT_ERR_CLIENT_ABORTED.
 */
export async function readBody(req: IncomingMessage, limit: number, goAhead?: () => void): Promise<ArrayBuffer | null> {
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
  return joinedBytes(chunks, size);
}

/** node:http fails a request whose connection closed before its body ended with ECONNRESET 'aborted'. */
function wentAway(req: IncomingMessage, error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (!req.complete && req.socket.destroyed);
}
