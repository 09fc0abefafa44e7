/**
 * Which of a hook's Response headers reach the wire. Resident owns the framing (issue 9): the
 * length and transfer coding of a response are node:http's, computed from the body actually
 * sent, so a hook can never announce one length and send another and desync a keep-alive or
 * pipelined connection. Runs in the worker, so the main thread never gets a head it cannot write.
 */
import * as zlib from 'node:zlib';
import { ResidentError } from '../errors.ts';

/**
 * Hop-by-hop and framing headers (RFC 9110 §7.6.1, RFC 9112 §6–7): they describe one connection
 * or one body's framing, and a hook's values (often copied from an upstream fetch()) describe
 * another.
 */
export function isHopByHop(name: string): boolean {
  // A switch, not a Set: a hook runs on this thread and can patch Set.prototype.has (red team 2,
  // F9); comparing string literals calls nothing it can reach.
  switch (name) {
    case 'content-length':
    case 'transfer-encoding':
    case 'connection':
    case 'keep-alive':
    case 'upgrade':
    case 'trailer':
    case 'te':
    case 'proxy-connection':
      return true;
    default:
      return false;
  }
}

/** What node:http refuses in a header value (its checkInvalidHeaderChar): it would throw in writeHead. */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * The content codings fetch() decodes (undici's fetch, lib/web/fetch/index.js): gzip, x-gzip,
 * deflate and br everywhere; zstd from undici 7.11 on (Node 24), where node:zlib has it.
 */
const DECODED_BY_FETCH = new Set(['gzip', 'x-gzip', 'deflate', 'br', ...(fetchDecodesZstd() ? ['zstd'] : [])]);
/** undici rejects a response with more codings than this, so none past it was decoded. */
const MAX_CODINGS = 5;

function fetchDecodesZstd(): boolean {
  if (typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress !== 'function') return false;
  const [major = 0, minor = 0] = (process.versions.undici ?? '0.0').split('.').map(Number);
  return major > 7 || (major === 7 && minor >= 11);
}

/**
 * fetch() decodes a body when it knows every one of its codings, and then keeps the
 * Content-Encoding header: relayed as is, it would label decoded bytes as compressed. A
 * Response the hook built itself (type 'default') keeps the header: its bytes are what it says.
 */
function decodedByFetch(response: Response, contentEncoding: string): boolean {
  if (response.type === 'default' || response.body === null) return false;
  const codings = contentEncoding.toLowerCase().split(',');
  return codings.length <= MAX_CODINGS && codings.every((coding) => DECODED_BY_FETCH.has(coding.trim()));
}

function checked(name: string, value: string): string {
  if (INVALID_VALUE.test(value)) {
    // The header is named; its value may be private and stays out of the log.
    throw new ResidentError('RESIDENT_ERR_HOOK_FAILED', `onConnection returned a Response whose "${name}" header has a character HTTP cannot carry (a control character or one above U+00FF)`);
  }
  return value;
}

// Taken when the worker starts, before any hook module loads: read through these, a Headers
// answers with its own list (names in lower case, values strings), whatever its class says.
const { entries, getSetCookie } = Headers.prototype;

/**
 * `headers` as a native Headers. A hook can make a Response's `headers` anything (an own
 * property, a subclass's getter, a Proxy): an iterable yielding `Content-Length` or `Set-Cookie`
 * in another case would pass the filters below and reach the wire (two lengths on one response,
 * the session cookie set by a hook). Anything that is not a Headers is copied into one, which
 * lowers the names and checks the values as `new Headers()` does.
 */
function native(headers: unknown): Headers {
  try {
    entries.call(headers);
    return headers as Headers;
  } catch {
    return new Headers(headers as ConstructorParameters<typeof Headers>[0]);
  }
}

/**
 * The Response's headers as a flat name, value list for writeHead, without the hop-by-hop and
 * framing ones and without a Content-Encoding fetch() already undid. Throws
 * RESIDENT_ERR_HOOK_FAILED naming a header whose value HTTP cannot carry.
 */
export function wireHeaders(response: Response): string[] {
  const source = native(response.headers);
  const headers: string[] = [];
  for (const [name, value] of entries.call(source)) {
    if (name === 'set-cookie' || isHopByHop(name)) continue;
    if (name === 'content-encoding' && decodedByFetch(response, value)) continue;
    headers.push(name, checked(name, value));
  }
  for (const cookie of getSetCookie.call(source)) headers.push('set-cookie', checked('set-cookie', cookie));
  return headers;
}
