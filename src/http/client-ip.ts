/**
 * The client IP a session is bound to. By default the socket peer; X-Forwarded-For only when
 * `sessions.trustProxy` names the proxies in front of us, and then the rightmost address that
 * is not one of them (RELIABILITY.md B2–B6). proxy-addr implements that walk.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import proxyaddr from 'proxy-addr';

export type TrustFunction = (address: string, hop: number) => boolean;

/** null when no proxy is trusted: forwarding headers are then ignored entirely. */
export function compileTrust(list: readonly string[]): TrustFunction | null {
  return list.length === 0 ? null : proxyaddr.compile([...list]);
}

/** Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d; compare the plain form (B7). */
export function normalizeIp(address: string): string {
  const lower = address.toLowerCase();
  if (lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4) return lower.slice(7);
  return lower;
}

export function clientIp(req: IncomingMessage, trust: TrustFunction | null): string {
  const peer = normalizeIp(req.socket.remoteAddress ?? '');
  if (!trust) return peer;
  const forwarded = proxyaddr(req, trust);
  // Garbage in the header (B6) falls back to the peer rather than binding to a non-address.
  return isIP(forwarded) ? normalizeIp(forwarded) : peer;
}

/** True when the request reached us over TLS, directly or through a trusted proxy (B10). */
export function cameOverTls(req: IncomingMessage, trust: TrustFunction | null): boolean {
  if ((req.socket as { encrypted?: boolean }).encrypted) return true;
  if (!trust || !trust(req.socket.remoteAddress ?? '', 0)) return false;
  const proto = req.headers['x-forwarded-proto'];
  const value = Array.isArray(proto) ? proto[0] : proto;
  return value?.split(',')[0]?.trim().toLowerCase() === 'https';
}
