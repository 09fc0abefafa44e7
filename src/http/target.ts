/**
 * The request target (RFC 9112 §3.2), parsed once at the edge: the ops routes, the static
 * files and the hook's `request.url` all see the path this returns, so none of them can route
 * on another path than the others. Whatever cannot be a target of this server (another
 * scheme, userinfo, a Host that is not a host, an unparsable URL) is refused here with
 * RESIDENT_ERR_BAD_REQUEST, before it reaches a worker.
 *
 * The common request (an origin-form path of plain characters, an ordinary Host) is checked
 * with character classes only: no URL object is built for it on the main thread. Anything
 * else is parsed by the WHATWG URL parser, the one the worker's `new Request()` uses, so the
 * path Resident routes on is the path the hook reads (dot segments removed, `\` read as `/`,
 * the same percent-encoding).
 */
import type { IncomingMessage } from 'node:http';
import { ResidentError } from '../errors.ts';

export interface RequestTarget {
  /** The path everything routes on; `*` for `OPTIONS *`. */
  readonly path: string;
  /** The query with its `?`, or ''. */
  readonly search: string;
  /** host[:port] of the hook's request.url: the absolute-form's, else the Host header's, else the fallback. */
  readonly host: string;
}

/**
 * The bytes of an origin-form path a URL parser leaves as they are: unreserved, sub-delims,
 * ':', '@', '/' and '%'. Not '\' (read as '/'), not what it percent-encodes, not '?' or '#'.
 */
const PLAIN_PATH_BYTE = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%") PLAIN_PATH_BYTE[c.charCodeAt(0)] = 1;

/**
 * An ordinary host[:port] the URL parser leaves as it is (but for case): a DNS name whose last
 * label starts with a letter (one ending in digits would be read as an IPv4 number), or a
 * dotted quad without leading zeros (which the parser reads as octal). Punycode labels
 * (xn--) are checked by the parser.
 */
const ORDINARY_HOST =
  /^(?:(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*\.?|(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))(?::(\d{1,5}))?$/;

/**
 * RFC 3986 host[:port]: a reg-name or IPv4 (unreserved and sub-delims), or a bracketed IPv6
 * literal. Percent-encoded reg-names are refused: the URL parser decodes them into characters
 * a host cannot hold, and no client sends them. No '/', '?', '#', '@', '\' or space can pass,
 * so a Host can never move the path or the userinfo of the URL built from it.
 */
const RFC_HOST = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::\d*)?$/;

/** The authority of an absolute-form target ends at the first of these. */
const AUTHORITY_END = /[/?#\\]/;

const ABSOLUTE_HTTP = /^https?:\/\//i;

function bad(reason: string): ResidentError {
  // The reason goes to a debug log line: fixed text only, never the client's bytes.
  return new ResidentError('RESIDENT_ERR_BAD_REQUEST', reason);
}

/**
 * The target of `req`, or throws RESIDENT_ERR_BAD_REQUEST. `fallbackHost` names the server when
 * an HTTP/1.0 request has neither a Host header nor an absolute-form target.
 */
export function parseTarget(
  req: Pick<IncomingMessage, 'url' | 'method' | 'headers' | 'rawHeaders' | 'httpVersion'>,
  fallbackHost: string,
): RequestTarget {
  const raw = req.url ?? '';
  // RFC 9112 §3.2: a missing Host (HTTP/1.1), a repeated one or an invalid one is a 400 in every form.
  const header = hostHeader(req);
  if (header !== undefined && !validHost(header)) throw bad('the Host header is not a host[:port]');
  if (header === undefined && req.httpVersion !== '1.0') throw bad('no Host header');
  const host = header ?? fallbackHost;

  if (raw.charCodeAt(0) === 0x2f /* '/' */) {
    const query = raw.indexOf('?');
    const path = query === -1 ? raw : raw.slice(0, query);
    const search = query === -1 ? '' : raw.slice(query);
    if (plainPath(path) && !search.includes('#')) return { path, search, host };
    // The host is only a stand-in: the path of a special-scheme URL does not depend on it.
    return fromUrl(parse(`http://h${raw}`), host);
  }
  if (ABSOLUTE_HTTP.test(raw)) {
    // RFC 9112 §3.2.2: the target's authority wins over Host. It must be a host[:port] as
    // well: no userinfo (RFC 9110 §4.2.4), and not empty (the URL parser would take the first
    // path segment as the host of `http:///x`).
    const start = raw.indexOf('//') + 2;
    const end = raw.slice(start).search(AUTHORITY_END);
    const authority = end === -1 ? raw.slice(start) : raw.slice(start, start + end);
    if (!validHost(authority)) throw bad('the authority of the absolute-form target is not a host[:port]');
    const url = parse(raw);
    return fromUrl(url, url.host);
  }
  if (raw === '*') {
    if (req.method === 'OPTIONS') return { path: '*', search: '', host };
    throw bad('the asterisk-form is for OPTIONS only');
  }
  throw bad('the target is neither a path nor an http(s) URL');
}

function parse(text: string): URL {
  try {
    return new URL(text);
  } catch {
    throw bad('the target is not a URL');
  }
}

function fromUrl(url: URL, host: string): RequestTarget {
  return { path: url.pathname, search: url.search, host };
}

/** The one Host header, undefined when there is none; throws when there are several. */
function hostHeader(req: Pick<IncomingMessage, 'headers' | 'rawHeaders'>): string | undefined {
  const host = req.headers.host;
  if (host === undefined) return undefined;
  // node:http keeps the first Host and drops the others, which a proxy in front may have read.
  const raw = req.rawHeaders;
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && isHost(name) && ++seen > 1) throw bad('more than one Host header');
  }
  return host;
}

/**
 * True when the URL parser keeps `path` as it is. A '.' right after a '/' or a '%2e' might
 * start a dot segment the parser removes: those go to the parser too (right, only slower, for
 * '/.well-known').
 */
function plainPath(path: string): boolean {
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c >= 128 || PLAIN_PATH_BYTE[c] === 0) return false;
    if (c === 0x2e /* . */ && path.charCodeAt(i - 1) === 0x2f /* / */) return false;
    if (c === 0x25 /* % */ && path.charCodeAt(i + 1) === 0x32 /* 2 */ && (path.charCodeAt(i + 2) | 0x20) === 0x65 /* e */) return false;
  }
  return true;
}

/**
 * Hosts already found valid. A server sees few distinct Host values, so nearly every request
 * is answered by this lookup; a client sending a new one each time only pays the full check.
 */
const validHosts = new Set<string>();
const MAX_VALID_HOSTS = 256;

/** 'host' in any case, without allocating a lower-cased copy per header. */
function isHost(name: string): boolean {
  return (
    (name.charCodeAt(0) | 0x20) === 0x68 &&
    (name.charCodeAt(1) | 0x20) === 0x6f &&
    (name.charCodeAt(2) | 0x20) === 0x73 &&
    (name.charCodeAt(3) | 0x20) === 0x74
  );
}

function validHost(host: string): boolean {
  if (validHosts.has(host)) return true;
  const ordinary = ORDINARY_HOST.exec(host);
  let valid: boolean;
  if (ordinary && !/xn--/i.test(host)) valid = ordinary[1] === undefined || Number(ordinary[1]) <= 65_535;
  else valid = RFC_HOST.test(host) && parsesAsHost(host);
  if (valid) {
    if (validHosts.size === MAX_VALID_HOSTS) validHosts.clear();
    validHosts.add(host);
  }
  return valid;
}

/**
 * What the grammar allows and the URL parser refuses (an IPv4 number out of range, bad
 * punycode, a port over 65535) would fail in the worker's `new Request()`: refused here.
 */
function parsesAsHost(host: string): boolean {
  try {
    new URL(`http://${host}/`);
    return true;
  } catch {
    return false;
  }
}
