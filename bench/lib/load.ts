/** Load generation: autocannon, every connection a distinct client that keeps its own cookie. */
import autocannon from 'autocannon';
import { request, Agent } from 'undici';

export interface LoadResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

/** The cookie pair (`name=value`) from a raw header list, if the response sets one. */
function cookieFrom(headers: unknown[]): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    if (String(headers[i]).toLowerCase() === 'set-cookie') return String(headers[i + 1]).split(';')[0];
  }
  return undefined;
}

/** Every cookie pair (`name=value`) a raw header list sets, in order. */
function cookiesFrom(headers: unknown[]): string[] {
  const pairs: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (String(headers[i]).toLowerCase() === 'set-cookie') pairs.push(String(headers[i + 1]).split(';')[0]!);
  }
  return pairs;
}

/**
 * A browser's cookie jar for one connection (`jar` in drive): every cookie it is set, by name,
 * all sent back in one Cookie header. A cluster node sets two (the session's and the routing
 * cookie a balancer reads); cookieFrom keeps only the first.
 */
function jarClient(client: any, initial: string | undefined, onCookie: ((cookie: string) => void) | undefined): void {
  const jar = new Map<string, string>();
  for (const pair of (initial ?? '').split(/;\s*/).filter(Boolean)) jar.set(pair.split('=')[0]!, pair);
  if (jar.size) client.setHeaders({ cookie: [...jar.values()].join('; ') });
  client.on('headers', (response: { headers: unknown[] }) => {
    let changed = false;
    for (const pair of cookiesFrom(response.headers)) {
      onCookie?.(pair);
      const name = pair.split('=')[0]!;
      if (jar.get(name) !== pair) {
        jar.set(name, pair);
        changed = true;
      }
    }
    if (changed) client.setHeaders({ cookie: [...jar.values()].join('; ') });
  });
}

/**
 * autocannon for `seconds`, every connection a client keeping the cookie it is given. With
 * `cookies` (one per connection), connection i starts with cookies[i] rather than none, and a
 * cookie the server sets replaces it there too: the same clients across runs (workload i).
 * `onCookie` sees every cookie a response sets. With `jar`, a connection keeps every cookie it
 * is set and sends them all back (workload j4, behind a balancer that routes on one of them);
 * without it, only the first of a response's cookies, as every other workload measures.
 */
export async function drive(
  url: string,
  options: { connections: number; seconds: number; path?: string; keepCookies?: boolean; cookies?: string[]; onCookie?: (cookie: string) => void; jar?: boolean },
): Promise<LoadResult> {
  const keepCookies = options.keepCookies ?? true;
  const { cookies, onCookie } = options;
  let clients = 0;
  const result = await autocannon({
    url: url + (options.path ?? '/'),
    connections: options.connections,
    duration: options.seconds,
    pipelining: 1,
    // autocannon resets a connection's `context` after each pass over its requests, so the
    // cookie lives on the client: captured from the response headers, sent from then on.
    setupClient: keepCookies
      ? (client: any) => {
          const index = clients++;
          if (options.jar) return jarClient(client, cookies?.[index], onCookie);
          let current = cookies?.[index];
          if (current) client.setHeaders({ cookie: current });
          client.on('headers', (response: { headers: unknown[] }) => {
            const cookie = cookieFrom(response.headers);
            if (cookie) onCookie?.(cookie);
            if (cookie && cookie !== current) {
              current = cookie;
              client.setHeaders({ cookie });
              if (cookies) cookies[index] = cookie;
            }
          });
        }
      : undefined,
  } as autocannon.Options);
  return {
    requests: result.requests.total,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors, // autocannon counts a timeout among its errors too
    non2xx: result.non2xx,
  };
}

/**
 * Creates `count` sessions, `concurrency` at a time; returns the cookies of the first `keep`.
 * With `prove`, each client sends its cookie back once right away (a second request): a
 * session whose cookie never came back is unproven, and Resident neither keeps more than
 * `sessions.maxUnprovenPerIp` of those per source nor stores one at shutdown.
 */
export async function createSessions(url: string, count: number, concurrency = 64, keep = 0, prove = false): Promise<string[]> {
  const agent = new Agent({ connections: concurrency, pipelining: 1 });
  const cookies: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const response = await request(url + '/', { dispatcher: agent });
      await response.body.dump();
      if (cookies.length >= keep && !prove) continue;
      const header = response.headers['set-cookie'];
      const cookie = String(Array.isArray(header) ? header[0] : header).split(';')[0]!;
      if (prove) await (await request(url + '/', { dispatcher: agent, headers: { cookie } })).body.dump();
      if (cookies.length < keep) cookies.push(cookie);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await agent.close();
  return cookies;
}

/**
 * Requests each cookie once (`concurrency` at a time): per-request latencies in ms, and how
 * many answers had each body (the hit counter's count: whether the session came back).
 */
export async function timeRequests(url: string, cookies: string[], concurrency = 64): Promise<{ latencies: number[]; bodies: Map<string, number> }> {
  const agent = new Agent({ connections: concurrency, pipelining: 1 });
  const latencies: number[] = [];
  const bodies = new Map<string, number>();
  let next = 0;
  const worker = async () => {
    while (next < cookies.length) {
      const cookie = cookies[next++]!;
      const started = performance.now();
      const response = await request(url + '/', { dispatcher: agent, headers: { cookie } });
      const body = await response.body.text();
      latencies.push(performance.now() - started);
      bodies.set(body, (bodies.get(body) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await agent.close();
  return { latencies, bodies };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function median(values: number[]): number {
  return percentile(values, 50);
}
