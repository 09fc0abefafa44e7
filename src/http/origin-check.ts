/**
 * CSRF protection beyond SameSite=Lax (issue 15, `csrf.checkOrigin`). Lax still sends the
 * session cookie with a top-level cross-site GET, and treats a sibling subdomain as the same
 * site; this check refuses, before any hook runs, a request that could change state (any
 * method but GET, HEAD, OPTIONS and TRACE) when the page that made the browser send it is
 * another origin than this server's and than the allowed ones.
 *
 * The page's origin is the Origin header, which browsers send with every request but GET and
 * HEAD, from this origin or another, and which no page's script can set. Without it (an older
 * browser) the Referer's origin is used. A request with neither comes from no
 * browser acting for another site: curl, a server, a test. It passes unless
 * `csrf.requireOrigin` says otherwise. Compare Go's net/http CrossOriginProtection, which
 * lets such requests pass for the same reason.
 *
 * This server's own origin is the scheme the request reached us by and its Host, or, from a
 * trusted proxy only (sessions.trustProxy), X-Forwarded-Host: what a client sends there itself
 * is ignored, as X-Forwarded-Proto is (RELIABILITY B10).
 */
import type { IncomingMessage } from 'node:http';
import type { TrustFunction } from './client-ip.ts';
import type { CsrfConfig } from './csrf-config.ts';

/** RFC 9110 §9.2.1: the methods that ask for nothing to change. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/**
 * Why the request is refused (fixed text for a debug line, never the client's bytes), or null
 * when it may go on.
 * @param host host[:port] the request was sent to (its target's)
 * @param secure it reached us over TLS, directly or through a trusted proxy
 */
export function crossOriginRefusal(
  req: IncomingMessage,
  csrf: CsrfConfig,
  host: string,
  secure: boolean,
  trust: TrustFunction | null,
): string | null {
  if (!csrf.checkOrigin || SAFE_METHODS.has(req.method ?? 'GET')) return null;
  const origin = req.headers.origin;
  const referer = req.headers.referer;
  if (origin === undefined && referer === undefined) return csrf.requireOrigin ? 'neither Origin nor Referer' : null;
  // An Origin decides alone: "null" (a sandboxed frame, a no-referrer policy) matches nothing.
  const claimed = originOf(origin ?? referer!);
  if (claimed !== undefined && (csrf.allowedOrigins.includes(claimed) || claimed === ownOrigin(req, host, secure, trust))) return null;
  return origin === undefined ? 'the Referer is another origin' : 'the Origin is another origin';
}

function ownOrigin(req: IncomingMessage, host: string, secure: boolean, trust: TrustFunction | null): string | undefined {
  const forwarded: string | string[] | undefined = trust?.(req.socket.remoteAddress ?? '', 0) ? req.headers['x-forwarded-host'] : undefined;
  // A proxy chain may list several hosts: the first is the one the browser asked for.
  const asked = [forwarded ?? []].flat()[0]?.split(',')[0]?.trim() || host;
  return originOf(`${secure ? 'https' : 'http'}://${asked}`);
}

/** The serialized origin of a URL ("https://a.example:8443"), undefined when it has none. */
function originOf(text: string): string | undefined {
  try {
    const { origin } = new URL(text);
    return origin === 'null' ? undefined : origin;
  } catch {
    return undefined;
  }
}
