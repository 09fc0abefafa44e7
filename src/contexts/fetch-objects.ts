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
import { forbidsBody, isResponse, takeBody } from './light-response.ts';
import type { WireBody } from './protocol.ts';
import { wireHeaders } from './response-headers.ts';

export { abortRequest, toRequest } from './lazy-request.ts';

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
  // Read once: what is checked is what is sent.
  const status = response.status;
  const light = takeBody(response);
  let headers: string[];
  try {
    checkStatus(status, light ? light.body !== null : response.body !== null);
    headers = light?.headers ?? wireHeaders(response);
  } catch (error) {
    // Never sent: let its source (an upstream fetch, a file) stop.
    if (!light) response.body?.cancel().catch(() => {});
    throw error;
  }
  // A string crosses as it is (the main thread writes it as UTF-8); bytes are the stand-in's own copy, transferred.
  if (light) return { status, headers, body: light.body instanceof Uint8Array ? (light.body.buffer as ArrayBuffer) : light.body };
  // A native Response with no body at all (Response.redirect(), a subclass's null body).
  if (response.body === null) return { status, headers, body: null };
  const ready = await readReady(response);
  return { status, headers, body: 'whole' in ready ? ready.whole : { streamId: holdBody(ready), threadId } };
}

/**
 * A final status node:http can write, with a body only where one may be: 200 to 999 (fetch()
 * relays an upstream's 600-999; the Response classes make 200-599). Checked here because a hook
 * can redefine `status` on its Response (an own property, a Proxy): written as it is, a 1xx would
 * be an interim answer, and the client would take the next response on the connection for this
 * request's; a body with a 204 or a 304 is not sent, yet its length would be.
 */
function checkStatus(status: unknown, hasBody: boolean): void {
  if (!Number.isInteger(status) || (status as number) < 200 || (status as number) > 999 || (hasBody && forbidsBody(status as number))) {
    // The value is the hook's and may be anything: only its kind is said.
    throw new ResidentError('RESIDENT_ERR_HOOK_FAILED', `onConnection returned a Response whose status (${typeof status === 'number' ? status : typeof status}) a Response${hasBody ? ' with a body' : ''} cannot have`);
  }
}
