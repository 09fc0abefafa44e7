/**
 * The client IP a session is bound to. By default the socket peer; X-Forwarded-For only when
 * `sessions.trustProxy` names the proxies in front of us, and then the rightmost address that
 * is not one of them (RELIABILITY.md B2–B6). proxy-addr implements that walk.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import proxyaddr from 'proxy-addr';

export type TrustFunction = (address: string, hop: number) => boolean;

/** null when no proxy is trusted: forwarding headers are then ignored entirely. */
export function compileTrust(list: readonly string[]): TrustFunction | null {
  return list.length === 0 ? null : proxyaddr.compile([...list]);
}

/**
 * One spelling per address, so binding compares addresses, not strings: IPv6 in its RFC 5952
 * form (`2001:0db8:0::1` → `2001:db8::1`), and IPv4-mapped addresses in any spelling as plain
 * IPv4 (dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d; B7). A zone ID
 * (`fe80::1%eth0`) names an interface of ours, not the client: it is dropped.
 */
export function normalizeIp(address: string): string {
  // The common cases cost one check: a plain IPv4 peer, and an IPv4 client of a dual-stack
  // listener. Parsing an IPv6 address takes microseconds, so those are remembered.
  if (isIP(address) === 4) return address;
  if (address.startsWith('::ffff:') && isIP(address.slice(7)) === 4) return address.slice(7);
  let canonical = canonicalIpv6.get(address);
  if (canonical === undefined) {
    const zone = address.indexOf('%');
    const plain = zone === -1 ? address : address.slice(0, zone);
    canonical = ipaddr.isValid(plain) ? ipaddr.process(plain).toString() : plain.toLowerCase();
    if (canonicalIpv6.size >= CANONICAL_CACHE_SIZE) canonicalIpv6.clear();
    canonicalIpv6.set(address, canonical);
  }
  return canonical;
}

/** Addresses seen recently → their canonical form; cleared when full (a bound, not an LRU). */
const canonicalIpv6 = new Map<string, string>();
const CANONICAL_CACHE_SIZE = 10_000;

export function clientIp(req: IncomingMessage, trust: TrustFunction | null): string {
  const peer = normalizeIp(req.socket.remoteAddress ?? '');
  if (!trust) return peer;
  const forwarded = proxyaddr(req, trust);
  // Garbage in the header (B6), including zone IDs, which name no client, falls back to the
  // peer rather than binding to a non-address.
  return isIP(forwarded) && !forwarded.includes('%') ? normalizeIp(forwarded) : peer;
}

/** True when the request reached us over TLS, directly or through a trusted proxy (B10). */
export function cameOverTls(req: IncomingMessage, trust: TrustFunction | null): boolean {
  if ((req.socket as { encrypted?: boolean }).encrypted) return true;
  if (!trust || !trust(req.socket.remoteAddress ?? '', 0)) return false;
  const proto = req.headers['x-forwarded-proto'];
  const value = Array.isArray(proto) ? proto[0] : proto;
  return value?.split(',')[0]?.trim().toLowerCase() === 'https';
}
