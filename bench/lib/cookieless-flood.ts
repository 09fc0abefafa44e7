/**
 * A cookieless flood (issue 12): `connections` keep-alive connections from another loopback
 * address than the real clients' (127.0.0.2 by default: the server sees another source), each
 * sending `GET path` without a cookie as fast as it is answered, for `seconds`. What a crawler
 * or a bot that never sends the cookie back does.
 */
import { Agent, request } from 'undici';

export interface FloodResult {
  requests: number;
  ok: number;
  /** 429 answers: Resident's "too many new sessions from this source". */
  refused: number;
  /** Other statuses and failed requests. */
  failed: number;
}

export async function cookielessFlood(url: string, options: { connections: number; seconds: number; path?: string; from?: string }): Promise<FloodResult> {
  // undici 7 takes the source address as the Agent's own `localAddress`: inside `connect` it is
  // overridden by that (unset) option and the requests leave from 127.0.0.1 (test/edge.test.ts).
  const agent = new Agent({ connections: options.connections, pipelining: 1, localAddress: options.from ?? '127.0.0.2' });
  const result: FloodResult = { requests: 0, ok: 0, refused: 0, failed: 0 };
  const until = performance.now() + options.seconds * 1000;
  const connection = async () => {
    while (performance.now() < until) {
      result.requests++;
      try {
        const response = await request(url + (options.path ?? '/'), { dispatcher: agent });
        await response.body.dump();
        if (response.statusCode === 200) result.ok++;
        else if (response.statusCode === 429) result.refused++;
        else result.failed++;
      } catch {
        result.failed++;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: options.connections }, connection));
  } finally {
    await agent.close();
  }
  return result;
}
