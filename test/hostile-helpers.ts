/**
 * What the hostile-traffic suites (test/hostile*.test.ts, issue 12) share: a server of their
 * shape (two edge threads, the SQLite store in a temp file, a small cap, the hit counter of
 * test/fixtures/redteam-hostile, which keeps nothing), a flood of 100,000 requests with its
 * statuses and the live contexts sampled while it runs, a proven user hitting its counter
 * meanwhile, and what the store holds.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, type TestContext } from 'node:test';
import type { ResidentConfigInput } from '../src/config.ts';
import { ErrorCodes } from '../src/errors.ts';
import { Client, fixtureHooks, send, type TestServer } from './helpers.ts';
import { edgeServers, metric } from './edge-helpers.ts';
import { flood } from './flood-client.ts';
import { get } from './wire.ts';

export const THREADS = 2;
export const MAX_CONTEXTS = 64;
/** The size of each flood: RELIABILITY.md D1 and D2 name it. */
export const FLOOD = 100_000;
const ADMIN_TOKEN = 'hostile-test-token-0123456789abcdef';
export const ADMIN = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };

export interface HostileServer {
  t: TestServer;
  /** The SQLite file of its store. */
  dbPath: string;
}

/**
 * `start(sessions)`: a server of the suites' shape on a SQLite file of its own, with metrics
 * and the admin view; closed, and the files removed, after the calling test file.
 */
export function hostileServers(): (sessions?: NonNullable<ResidentConfigInput['sessions']>) => Promise<HostileServer> {
  const start = edgeServers(fixtureHooks('redteam-hostile'));
  const storeDir = mkdtempSync(join(tmpdir(), 'resident-hostile-'));
  // after() hooks run in the order they were registered: the servers close before their files go.
  after(() => rmSync(storeDir, { recursive: true, force: true }));
  let stores = 0;
  return async (sessions = {}) => {
    const dbPath = join(storeDir, `contexts-${++stores}.db`);
    const t = await start(THREADS, {
      store: { kind: 'sqlite', path: dbPath },
      metrics: { port: 0 },
      admin: { token: ADMIN_TOKEN },
      sessions: { maxContexts: MAX_CONTEXTS, ...sessions },
    });
    return { t, dbPath };
  };
}

/** The session records in the store file, by the client IP they were bound to. */
export function storedRows(dbPath: string): Map<string, number> {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    const rows = db.prepare('SELECT client_ip AS ip, count(*) AS n FROM sessions GROUP BY client_ip').all() as Array<{ ip: string; n: number }>;
    return new Map(rows.map(({ ip, n }) => [ip, Number(n)]));
  } finally {
    db.close();
  }
}

/** Store calls that write, summed over outcomes (README metrics table). */
export async function storeWrites(t: TestServer): Promise<number> {
  let sum = 0;
  for (const operation of ['set', 'setIf', 'delete', 'deleteIf', 'quarantine']) {
    sum += await metric(t, 'resident_store_operation_duration_seconds_count', `operation="${operation}"`);
  }
  return sum;
}

export interface FloodResult {
  statuses: Map<string, number>;
  /** The most live contexts seen while it ran (every 10 ms, from the threads' shared counts). */
  maxLive: number;
  ms: number;
  /** Requests sent again because their socket closed before they were answered (see flood-client.ts). */
  resent: number;
}

/**
 * `total` requests for `/inc`, `sockets` at a time on keep-alive sockets bound to `sources`
 * (round robin), each with the header lines `headers(i)` gives (no cookie by default).
 */
export async function floodOf(
  t: TestServer,
  options: { sources: string[]; total: number; sockets: number; headers?: (i: number) => string[] },
): Promise<FloodResult> {
  const statuses = new Map<string, number>();
  let maxLive = 0;
  const sampler = setInterval(() => (maxLive = Math.max(maxLive, t.server.sessions.stats.live)), 10);
  const began = Date.now();
  let resent = 0;
  try {
    ({ resent } = await flood({
      port: Number(new URL(t.url).port),
      sources: options.sources,
      sockets: options.sockets,
      depth: 1,
      total: options.total,
      request: (i) => get('/inc', options.headers?.(i)),
      onAnswer: (status, errorBody) => {
        const key = errorBody === undefined ? String(status) : `${status} ${codeOf(errorBody)}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
      },
    }));
  } finally {
    clearInterval(sampler);
  }
  maxLive = Math.max(maxLive, t.server.sessions.stats.live);
  return { statuses, maxLive, ms: Date.now() - began, resent };
}

/** The error code whose public message is `body` (error answers are text: src/errors.ts). */
function codeOf(body: string): string {
  return Object.entries(ErrorCodes).find(([, { message }]) => message === body)?.[0] ?? JSON.stringify(body.slice(0, 80));
}

/** The hit counter's answer (test/fixtures/redteam-hostile). */
interface Hit {
  n: number;
  resumed: boolean;
  proven: boolean;
}

/**
 * A real user on `localAddress`: a first visit, then its cookie back once (now proven), then
 * `/inc` over and over until `stop()` says so, checking every answer: 200, one more hit than
 * the last, never resumed. What went wrong is collected, not thrown, so the flood runs on.
 */
export async function provenUser(t: TestServer, localAddress: string) {
  const client = new Client(t.url, { localAddress });
  const first = (await client.get('/inc')).json<Hit>();
  const second = (await client.get('/inc')).json<Hit>();
  assert.deepEqual([first.n, first.proven, second.n, second.proven], [1, false, 2, true], 'the user is proven before the flood');
  let expected = 2;
  const wrong: string[] = [];
  let running = true;
  const visit = async () => {
    const reply = await client.get('/inc');
    expected++;
    const hit = reply.status === 200 ? reply.json<Hit>() : undefined;
    if (!hit || hit.n !== expected || hit.resumed || !hit.proven) wrong.push(`visit ${expected}: ${reply.status} ${reply.text}`);
  };
  const loop = (async () => {
    while (running) await visit();
  })();
  return {
    async stop() {
      running = false;
      await loop;
      // One visit after the flood: the context is still the live one.
      await visit();
      await client.close();
      return { visits: expected, wrong };
    },
  };
}

/** What a flood of cookieless requests must leave behind (D1), asserted and printed. */
export async function assertFloodContained(t: TestContext, server: TestServer, dbPath: string, result: FloodResult, user: { visits: number; wrong: string[] }, floodSources: string[]) {
  await server.settle();
  const live = server.server.sessions.stats.live;
  const rows = storedRows(dbPath);
  const floodRows = floodSources.reduce((sum, source) => sum + (rows.get(source) ?? 0), 0);
  const overview = (await send(`${server.server.adminUrl}api/overview`, ADMIN)).json<{ sessions: { live: number; unproven: number; proven: number; suspendedKnown: number } }>();
  const { created, dropped, pushedOut, refusedNew, resumed } = server.server.sessions.stats;
  const figures = {
    requests: FLOOD,
    ms: result.ms,
    statuses: Object.fromEntries(result.statuses),
    resent: result.resent,
    maxLiveSampled: result.maxLive,
    liveAtEnd: live,
    overview: overview.sessions,
    storedRows: Object.fromEntries(rows),
    storeWrites: await storeWrites(server),
    created,
    dropped,
    pushedOut,
    refusedNew,
    resumed,
    userVisits: user.visits,
  };
  t.diagnostic(JSON.stringify(figures));
  // README "Hostile traffic": 200, or 429 RESIDENT_ERR_TOO_MANY_NEW when the source's own
  // unproven sessions are all busy. No 5xx is allowed: fewer requests are in flight than
  // maxContexts, so "every context busy" (503) cannot be true.
  const unexpected = [...result.statuses].filter(([status]) => status !== '200' && status !== '429 RESIDENT_ERR_TOO_MANY_NEW');
  assert.deepEqual(unexpected, [], 'every flood request got 200 or the documented 429');
  assert.equal([...result.statuses.values()].reduce((a, b) => a + b, 0), FLOOD);
  // The server closed no connection under the flood.
  assert.equal(result.resent, 0, 'requests whose connection closed unanswered');
  assert.ok(result.maxLive <= MAX_CONTEXTS, `live contexts reached ${result.maxLive} during the flood (cap ${MAX_CONTEXTS})`);
  assert.ok(live <= MAX_CONTEXTS && overview.sessions.live <= MAX_CONTEXTS, `live contexts at the end: ${live}`);
  // Unproven sessions leave memory without a record: the flood's budget in the store is zero.
  assert.equal(floodRows, 0, `records the flood left in the store: ${JSON.stringify(figures.storedRows)}`);
  // Nor written and deleted since: the proven user stayed live, so nothing had a reason to write.
  assert.equal(figures.storeWrites, 0, 'store writes');
  assert.equal(overview.sessions.suspendedKnown, 0, 'no session was suspended with a record');
  assert.deepEqual(user.wrong, [], 'the proven user kept its live context and every hit');
  assert.equal(resumed, 0, 'nothing was resumed');
  assert.ok(overview.sessions.proven >= 1, 'the proven user is live');
}
