/**
 * The header a node adds to a request it forwards to the session's owner: the original client's
 * address, whether it came over TLS, and the hops so far, authenticated with an HMAC of
 * cluster.secret over those fields, the method and the path. The owner trusts the client
 * address for IP binding only from this header (G1), and only when the MAC checks out: a client
 * that sends the header itself to the public port has it stripped, and one that reaches the
 * private listener without the secret is refused (G2).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const FORWARD_HEADER = 'x-resident-forward';

/** What a forwarded request carries about its client. */
export interface Forwarded {
  clientIp: string;
  /** The client's connection was TLS (cookies get Secure, the URL https). */
  secure: boolean;
  /** Nodes this request has passed through already: 1 on the first forward. */
  hops: number;
}

/** How far a signed header's time may be from the receiver's clock (clock skew between machines). */
const MAX_SKEW_MS = 5 * 60_000;

export class ForwardAuth {
  readonly #secret: string;

  constructor(secret: string) {
    this.#secret = secret;
  }

  #mac(payload: string, method: string, path: string): Buffer {
    return createHmac('sha256', this.#secret).update(`v1.${payload}\n${method}\n${path}`).digest();
  }

  /** The header value for a request forwarded with `method` to `path` (path and query). */
  sign(forwarded: Forwarded, method: string, path: string): string {
    const payload = Buffer.from(JSON.stringify({ ip: forwarded.clientIp, tls: forwarded.secure, hops: forwarded.hops, t: Date.now() })).toString('base64url');
    return `v1.${payload}.${this.#mac(payload, method, path).toString('base64url')}`;
  }

  /** What a received header vouches for, or undefined when it is missing, malformed, stale or forged. */
  verify(value: string | string[] | undefined, method: string, path: string): Forwarded | undefined {
    if (typeof value !== 'string') return undefined;
    const [version, payload, mac, extra] = value.split('.');
    if (version !== 'v1' || !payload || !mac || extra !== undefined) return undefined;
    const expected = this.#mac(payload, method, path);
    const given = Buffer.from(mac, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    let fields: { ip?: unknown; tls?: unknown; hops?: unknown; t?: unknown };
    try {
      fields = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof fields;
    } catch {
      return undefined;
    }
    const { ip, tls, hops, t } = fields;
    if (typeof ip !== 'string' || typeof tls !== 'boolean' || !Number.isSafeInteger(hops) || typeof t !== 'number') return undefined;
    if (Math.abs(Date.now() - t) > MAX_SKEW_MS) return undefined;
    return { clientIp: ip, secure: tls, hops: hops as number };
  }
}

/** `rawHeaders` without any forwarding header: what a hook sees, whoever sent it. */
export function withoutForwardHeader(rawHeaders: string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === FORWARD_HEADER) continue;
    kept.push(rawHeaders[i]!, rawHeaders[i + 1]!);
  }
  return kept;
}
