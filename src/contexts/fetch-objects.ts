/**
 * Converting between the wire protocol and the Fetch classes hooks use. These conversions
 * were most of a worker's time for a trivial hook (issue 10; bench/worker-path.ts measures
 * them): a request is a stand-in that builds the real Request only when the hook needs it
 * (./lazy-request.ts), and a Response built from a string or bytes hands its body over as it
 * was given (./light-response.ts) instead of being read back through a stream.
 */
import { threadId } from 'node:worker_threads';
import { ResidentError } from '../errors.ts';
import { holdBody, readReady } from './body-streams.ts';
import { isResponse, takeBody } from './light-response.ts';
import type { WireBody } from './protocol.ts';
import { wireHeaders } from './response-headers.ts';

export { toRequest } from './lazy-request.ts';

export interface WireResponse {
  status: number;
  headers: string[];
  body: WireBody;
}

/**
 * The hook's Response as the main thread writes it: framing headers dropped (./response-headers.ts),
 * a string or bytes body whole, any other body held here for the main thread to pull.
 */
export async function fromResponse(response: Response | undefined): Promise<WireResponse> {
  if (response === undefined) return { status: 404, headers: ['content-type', 'text/plain; charset=utf-8'], body: 'Not Found' };
  if (!isResponse(response) || response.type === 'error') {
    throw new ResidentError('RESIDENT_ERR_HOOK_FAILED', 'onConnection must return a Response (not Response.error()) or undefined');
  }
  const light = takeBody(response);
  let headers: string[];
  try {
    headers = light?.headers ?? wireHeaders(response);
  } catch (error) {
    // Never sent: let its source (an upstream fetch, a file) stop.
    if (!light) response.body?.cancel().catch(() => {});
    throw error;
  }
  // A string crosses as it is (the main thread writes it as UTF-8); bytes are the stand-in's own copy, transferred.
  if (light) return { status: response.status, headers, body: light.body instanceof Uint8Array ? (light.body.buffer as ArrayBuffer) : light.body };
  // A native Response with no body at all (Response.redirect(), a subclass's null body).
  if (response.body === null) return { status: response.status, headers, body: null };
  const ready = await readReady(response);
  return { status: response.status, headers, body: 'whole' in ready ? ready.whole : { streamId: holdBody(ready), threadId } };
}
