/**
 * Workload (h), proxy-like: a fixed pool of sessions over keep-alive connections, a session
 * picked at random for every request, as a reverse proxy's connections carry many clients.
 * Two requests of one session are often in flight at once, on different connections, so the
 * run ends by checking that no update to a session was lost (readCounters).
 */
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import type { LoadResult } from './load.ts';

export interface SessionLoadResult extends LoadResult {
  /** 2xx responses: the updates the server acknowledged. */
  ok: number;
  /** Requests written and never answered (timeouts, broken connections): served or not, unknown. */
  unanswered: number;
}

/** A random index below `count`, never `last` unless there is no other. */
function otherThan(last: number, count: number): number {
  if (last < 0 || count < 2) return Math.floor(Math.random() * count);
  const index = Math.floor(Math.random() * (count - 1));
  return index >= last ? index + 1 : index;
}

/** What this file uses of autocannon's Client beyond its typings: two events and the request limit. */
interface UntypedClient {
  reqsMade: number;
  responseMax?: number;
  on(event: 'request' | 'response' | 'done', listener: () => void): unknown;
}

/** A load that ran past this many seconds after its end without draining is cut off. */
const DRAIN_LIMIT_S = 15;

/** `task` once for every index below `count`, `concurrency` at a time over one undici Agent. */
async function eachOnce<T>(count: number, concurrency: number, task: (index: number, agent: Agent) => Promise<T>): Promise<T[]> {
  const agent = new Agent({ connections: concurrency, pipelining: 1 });
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      results[index] = await task(index, agent);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    await agent.close();
  }
  return results;
}

/** Opens `count` sessions with one request each (no cookie sent); returns their cookie pairs. */
export function openSessions(url: string, count: number, path = '/'): Promise<string[]> {
  return eachOnce(count, Math.min(count, 16), async (_, dispatcher) => {
    const response = await request(url + path, { dispatcher });
    await response.body.dump();
    const header = response.headers['set-cookie'];
    if (response.statusCode !== 200 || header === undefined) throw new Error(`${url}${path} opened no session (${response.statusCode})`);
    return String(Array.isArray(header) ? header[0] : header).split(';')[0]!;
  });
}

/** Requests each session once more and returns the hit counter each answers with. */
export function readCounters(url: string, cookies: string[], path = '/'): Promise<number[]> {
  return eachOnce(cookies.length, Math.min(cookies.length, 16), async (index, dispatcher) => {
    const response = await request(url + path, { dispatcher, headers: { cookie: cookies[index]! } });
    const body = await response.body.text();
    const value = Number(body);
    if (response.statusCode !== 200 || !Number.isInteger(value)) throw new Error(`${url}${path} answered ${response.statusCode} ${body.slice(0, 80)}`);
    return value;
  });
}

/**
 * Drives `url` for `seconds`, every request with the cookie of a random session of `cookies`,
 * never the one the connection sent last. At the end no connection sends again and each waits
 * for its last answer (a drain), so every request is either answered or counted unanswered;
 * req/s is the answered requests over the whole time, drain included.
 */
export async function driveSessions(url: string, cookies: string[], options: { connections: number; seconds: number; path?: string }): Promise<SessionLoadResult> {
  const clients: UntypedClient[] = [];
  let sent = 0;
  let answered = 0;
  let running = options.connections;
  const started = performance.now();
  let ended = started;
  // autocannon stops a client before its next request once it has made `responseMax`.
  const drain = setTimeout(() => {
    for (const client of clients) client.responseMax = client.reqsMade;
  }, options.seconds * 1000);
  const result = await autocannon({
    url: url + (options.path ?? '/'),
    connections: options.connections,
    duration: options.seconds + DRAIN_LIMIT_S,
    pipelining: 1,
    setupClient: (typed) => {
      const client = typed as unknown as UntypedClient;
      clients.push(client);
      client.on('request', () => sent++);
      client.on('response', () => answered++);
      client.on('done', () => {
        if (--running === 0) ended = performance.now();
      });
      // Called for every request this connection sends: a session other than its last one.
      let last = -1;
      typed.setRequests([
        {
          setupRequest: (req) => {
            last = otherThan(last, cookies.length);
            return { ...req, headers: { ...req.headers, cookie: cookies[last]! } };
          },
        },
      ]);
    },
  });
  clearTimeout(drain);
  if (running > 0) ended = performance.now();
  return {
    requests: answered,
    rps: answered / ((ended - started) / 1000),
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors,
    non2xx: result.non2xx,
    ok: result['2xx'],
    unanswered: sent - answered,
  };
}
