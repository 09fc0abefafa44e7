/**
 * The header a node adds to a request it forwards to the session's owner: the original client's
 * address, whether it came over TLS, and the hops so far, authenticated with an HMAC of
 * cluster.secret over those fields, the time, and what the request is: its purpose (a client's
 * request forwarded, or a call of one node to another: the two can never stand for each
 * other), method, path, Cookie header and the node it is for. The owner trusts the client
 * address for IP binding only from this header (G1), and only when the MAC checks out: a client
 * that sends the header itself to the public port has it stripped, and one that reaches the
 * private listener without the secret is refused (G2). A captured header opens nothing else: not
 * another session (the cookie is signed), not another node, not after MAX_SKEW_MS.
 *
 * The node a header is for travels in its signed payload, so a receiver can tell a header for
 * an earlier incarnation of itself (the sender's view of the owner is stale: this node was
 * restarted, or rejoined after a lost lease) from one for another node, and tell the sender to
 * look again rather than refuse.
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

/** What a received header vouches for: its client, and the incarnation it was signed for. */
export interface Vouched extends Forwarded {
  /** `<nodeId>#<incarnation>` of the node the sender meant. */
  to: string;
}

/** What a signature is for: a header is verified against the same (but `to`, read from it), or refused. */
export interface SignedTarget {
  purpose: 'forward' | 'peer';
  method: string;
  /** Path and query, as in the request line. */
  path: string;
  /** The Cookie header as Node reads it (several joined with "; "), or '' without one. */
  cookie: string;
  /** The incarnation of the node the request is for (`<nodeId>#<incarnation>`). */
  to: string;
}

/** How far a signed header's time may be from the receiver's clock (clock skew between machines, kept in step by NTP). */
const MAX_SKEW_MS = 30_000;

export class ForwardAuth {
  readonly #secret: string;

  constructor(secret: string) {
    this.#secret = secret;
  }

  #mac(payload: string, target: Omit<SignedTarget, 'to'>): Buffer {
    const { purpose, method, path, cookie } = target;
    return createHmac('sha256', this.#secret).update(`v3.${payload}\n${purpose}\n${method}\n${path}\n${cookie}`).digest();
  }

  /** The header value for a request to `target`. */
  sign(forwarded: Forwarded, target: SignedTarget): string {
    const fields = { ip: forwarded.clientIp, tls: forwarded.secure, hops: forwarded.hops, t: Date.now(), to: target.to };
    const payload = Buffer.from(JSON.stringify(fields)).toString('base64url');
    return `v3.${payload}.${this.#mac(payload, target).toString('base64url')}`;
  }

  /**
   * What a received header vouches for, or undefined when it is missing, malformed, stale,
   * forged or signed for another request. The caller compares `to` with itself.
   */
  verify(value: string | string[] | undefined, target: Omit<SignedTarget, 'to'>): Vouched | undefined {
    if (typeof value !== 'string') return undefined;
    const [version, payload, mac, extra] = value.split('.');
    if (version !== 'v3' || !payload || !mac || extra !== undefined) return undefined;
    const expected = this.#mac(payload, target);
    const given = Buffer.from(mac, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    let fields: { ip?: unknown; tls?: unknown; hops?: unknown; t?: unknown; to?: unknown };
    try {
      fields = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof fields;
    } catch {
      return undefined;
    }
    const { ip, tls, hops, t, to } = fields;
    if (typeof ip !== 'string' || typeof tls !== 'boolean' || !Number.isSafeInteger(hops) || (hops as number) < 0 || typeof t !== 'number' || typeof to !== 'string') return undefined;
    if (Math.abs(Date.now() - t) > MAX_SKEW_MS) return undefined;
    return { clientIp: ip, secure: tls, hops: hops as number, to };
  }
}

/** The node of an incarnation's name (`<nodeId>#<incarnation>`, ./lease.ts). */
export function nodeOf(owner: string): string {
  const mark = owner.lastIndexOf('#');
  return mark === -1 ? owner : owner.slice(0, mark);
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
