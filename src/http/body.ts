import type { IncomingMessage } from 'node:http';
import { ResidentError } from '../errors.ts';

/**
 * The request body as one ArrayBuffer (transferred, not copied, to the worker), or null for
 * none. Over `limit` bytes is refused with 413 before or while reading (RELIABILITY.md D6).
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<ArrayBuffer | null> {
  if (req.method === 'GET' || req.method === 'HEAD') {
    req.resume();
    return null;
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new ResidentError('RESIDENT_ERR_BODY_TOO_LARGE');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new ResidentError('RESIDENT_ERR_BODY_TOO_LARGE');
    chunks.push(chunk);
  }
  if (size === 0) return null;
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return body.buffer;
}
