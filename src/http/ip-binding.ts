/**
 * Whether a request's client IP may use a session bound to another address. Exact binding
 * compares the normalised strings; prefix binding (sessions.bindIp: { ipv4: 24, ipv6: 64 })
 * compares networks, so a phone that changes address within its carrier's /24, or an IPv6
 * host rotating its temporary address within its /64 (RFC 8981), keeps its session
 * (RELIABILITY.md B8). An IPv4 client never matches an IPv6 binding or the reverse.
 */
import ipaddr from 'ipaddr.js';

export type IpPrefixes = { ipv4: number; ipv6: number };
export type IpMatcher = (bound: string, client: string) => boolean;

export function ipMatcher(prefixes: IpPrefixes | false): IpMatcher {
  if (prefixes === false) return () => true;
  if (prefixes.ipv4 === 32 && prefixes.ipv6 === 128) return (bound, client) => bound === client;
  return (bound, client) => {
    if (bound === client) return true;
    if (!ipaddr.isValid(bound) || !ipaddr.isValid(client)) return false;
    const a = ipaddr.parse(bound);
    const b = ipaddr.parse(client);
    if (a.kind() !== b.kind()) return false;
    return a.kind() === 'ipv4'
      ? (a as ipaddr.IPv4).match(b as ipaddr.IPv4, prefixes.ipv4)
      : (a as ipaddr.IPv6).match(b as ipaddr.IPv6, prefixes.ipv6);
  };
}

/**
 * The source a request is counted against for the hostile-traffic budgets
 * (sessions.maxUnprovenPerIp, maxUnknownIdsPerIp): the address IP binding uses, or its network
 * when `bindIp` binds a prefix. IPv6 is grouped by /64 at least, however exact the binding: one
 * host owns a whole /64 and rotates through it at will (RFC 8981), so a finer source would let
 * it multiply its budget by 2^64.
 */
export function sourceKey(ip: string, prefixes: IpPrefixes | false): string {
  if (!ipaddr.isValid(ip)) return ip;
  const address = ipaddr.process(ip);
  if (address.kind() === 'ipv4') {
    const bits = prefixes === false ? 32 : prefixes.ipv4;
    return bits >= 32 ? address.toString() : `${ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${bits}`).toString()}/${bits}`;
  }
  const bits = Math.min(64, prefixes === false ? 64 : prefixes.ipv6);
  return `${ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${bits}`).toNormalizedString()}/${bits}`;
}
