/**
 * What the tests of edges on every thread share: servers started per file and closed after
 * it, one-off connections (the kernel picks the thread afresh for each), the session cookie.
 */
import { after } from 'node:test';
import { Agent } from 'undici';
import assert from 'node:assert/strict';
import { send, startTestServer, type Reply, type TestServer } from './helpers.ts';

/** `start(threads, overrides)`: a server with `hooks`, `processTimeout` 1 h, warnings only; closed after the file. */
export function edgeServers(hooks: { onConnection: string; onSessionSuspend: string }) {
  const servers: TestServer[] = [];
  after(async () => {
    await Promise.all(servers.map((t) => t.close()));
  });
  return async function start(threads: number, overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
    const t = await startTestServer({
      log: { level: 'warn' },
      ...overrides,
      workers: { threads, ...overrides.workers },
      sessions: { processTimeout: '1h', ...overrides.sessions },
      hooks: { ...hooks, ...overrides.hooks },
    });
    servers.push(t);
    return t;
  };
}

/** One request over a connection of its own: the kernel picks its thread afresh each time. */
export async function fresh(url: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer; localAddress?: string } = {}): Promise<Reply> {
  const agent = new Agent({ connections: 1, ...(init.localAddress ? { localAddress: init.localAddress } : {}) });
  try {
    return await send(url, { method: init.method, headers: init.headers, body: init.body, dispatcher: agent });
  } finally {
    await agent.close();
  }
}

/** The session ID a reply's Set-Cookie gives (RSID), if any. */
export function cookieOf(reply: Reply): string | undefined {
  const line = reply.setCookies.find((candidate) => candidate.startsWith('RSID='));
  return line?.slice(5, line.indexOf(';'));
}

/** The sum of the samples of `name` whose labels contain `labels`, from the server's /metrics. */
export async function metric(t: TestServer, name: string, labels = ''): Promise<number> {
  const reply = await send(t.server.metricsUrl!);
  assert.equal(reply.status, 200);
  let sum = 0;
  for (const line of reply.text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Runs `jobs` with at most `width` at a time. */
export async function pool<T>(count: number, width: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await job(i);
      }
    }),
  );
  return results;
}
