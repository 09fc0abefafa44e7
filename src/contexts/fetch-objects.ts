/**
 * Converting between the wire protocol and the Fetch classes hooks use. These conversions
 * were over 40% of a worker's time for a trivial hook (bench/ profile), so the common cases
 * take shortcuts that keep the standard classes.
 */
import type { WireRequest } from './protocol.ts';

export function toRequest(wire: WireRequest): Request {
  // Header pairs go straight into the Request: building a Headers first copies them twice.
  const raw = wire.headers === '' ? [] : wire.headers.split('\n');
  const headers: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) headers.push([raw[i]!, raw[i + 1]!]);
  return new Request(wire.url, { method: wire.method, headers, body: wire.body });
}

/** undici keeps what a Response was built from under a `state` symbol: found once, if present. */
let stateSymbol: symbol | null | undefined;

function bodySource(response: Response): string | Uint8Array | undefined {
  if (stateSymbol === undefined) {
    stateSymbol = Object.getOwnPropertySymbols(response).find((symbol) => symbol.description === 'state') ?? null;
  }
  if (stateSymbol === null || response.bodyUsed) return undefined;
  const body = (response as unknown as Record<symbol, { body?: { source?: unknown; stream?: ReadableStream } | null }>)[stateSymbol]?.body;
  if (!body || body.stream?.locked) return undefined;
  const { source } = body;
  return typeof source === 'string' || source instanceof Uint8Array ? source : undefined;
}

/**
 * The response body as its string, or one ArrayBuffer when it was built from bytes (taken from its
 * source, not read back through its stream), null when there is none, and undefined for any
 * other body (a stream, a Blob, a fetch() body, one already read): that one is streamed.
 */
export function wholeBody(response: Response): string | ArrayBuffer | null | undefined {
  if (response.body === null) return null;
  const source = bodySource(response);
  if (typeof source === 'string') return source;
  if (source) return source.slice().buffer as ArrayBuffer;
  return undefined;
}
