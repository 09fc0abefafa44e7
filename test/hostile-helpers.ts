/**
 * What the hostile-traffic suites (test/hostile*.test.ts, issue 12) share: a server of their
 * shape (two edge threads, a store of their choice: SQLite in a temp file, Redis under a prefix
 * of its own or PostgreSQL in a table of its own; a small cap; the hit counter of
 * test/fixtures/redteam-hostile, which keeps nothing), a flood of 100,000 requests with its
 * statuses and the live contexts sampled while it runs, a proven user hitting its counter
 * meanwhile, and what the store holds, read behind the server's back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, type TestContext } from 'node:test';
import type { ResidentConfigInput } from '../src/config.ts';
import { ErrorCodes } from '../src/errors.ts';
import { tableNames } from '../src/stores/postgres-schema.ts';
import { Client, fixtureHooks, send, type TestServer } from './helpers.ts';
import { edgeServers, metric } from './edge-helpers.ts';
import { flood } from './flood-client.ts';
import { dropTables, POSTGRES_URL, postgresUnavailable, uniqueTable, withClient } from './stores/postgres-helpers.ts';
import { rawClient, REDIS_URL, redisUnavailable, removePrefixes, uniquePrefix } from './stores/redis-helpers.ts';
import { get } from './wire.ts';

export const THREADS = 2;
export const MAX_CONTEXTS = 64;
/** The size of each flood: RELIABILITY.md D1 and D2 name it. */
export const FLOOD = 100_000;
const ADMIN_TOKEN = 'hostile-test-token-0123456789abcdef';
export const ADMIN = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };

/** The stores the floods run against (issue 12: SQLite, Redis, PostgreSQL). */
export type HostileStore = 'sqlite' | 'redis' | 'postgres';

/** Why `store` cannot be used on this machine, or undefined when it can. */
export async function storeUnavailable(store: HostileStore): Promise<string | undefined> {
  if (store === 'redis') return redisUnavailable();
  if (store === 'postgres') return (await postgresUnavailable()) ?? undefined;
  return undefined;
}

export interface HostileServer {
  t: TestServer;
  store: HostileStore;
  /** The session records its store holds, by the client IP they were bound to. */
  storedRows(): Promise<Map<string, number>>;
}

/** One store of a kind: its config, and its records counted behind the server's back. */
interface StoreUnderTest {
  config: NonNullable<ResidentConfigInput['store']>;
  storedRows(): Promise<Map<string, number>>;
}

/**
 * `start(sessions)`: a server of the suites' shape on a store of its own of kind `store`, with
 * metrics and the admin view; closed, and its file, keys or tables removed, after the calling
 * test file.
 */
export function hostileServers(store: HostileStore = 'sqlite'): (sessions?: NonNullable<ResidentConfigInput['sessions']>) => Promise<HostileServer> {
  const start = edgeServers(fixtureHooks('redteam-hostile'));
  // after() hooks run in the order they were registered: the servers close (and write what
  // they hold) before their stores go.
  const newStore = storesOf(store);
  return async (sessions = {}) => {
    const { config, storedRows } = newStore();
    const t = await start(THREADS, {
      store: config,
      metrics: { port: 0 },
      admin: { token: ADMIN_TOKEN },
      sessions: { maxContexts: MAX_CONTEXTS, ...sessions },
    });
    return { t, store, storedRows };
  };
}

/** A maker of fresh stores of kind `store`, whose remains are removed after the test file. */
function storesOf(store: HostileStore): () => StoreUnderTest {
  switch (store) {
    case 'sqlite': {
      const storeDir = mkdtempSync(join(tmpdir(), 'resident-hostile-'));
      after(() => rmSync(storeDir, { recursive: true, force: true }));
      let stores = 0;
      return () => {
        const path = join(storeDir, `contexts-${++stores}.db`);
        return { config: { kind: 'sqlite', path }, storedRows: async () => sqliteRows(path) };
      };
    }
    case 'redis': {
      const prefixes: string[] = [];
      after(() => (prefixes.length > 0 ? removePrefixes(prefixes) : undefined));
      return () => {
        const prefix = uniquePrefix();
        prefixes.push(prefix);
        return { config: { kind: 'redis', url: REDIS_URL, prefix }, storedRows: () => redisRows(prefix) };
      };
    }
    case 'postgres': {
      const tables: string[] = [];
      after(() => dropTables(tables));
      return () => {
        const table = uniqueTable();
        tables.push(table);
        return { config: { kind: 'postgres', url: POSTGRES_URL, table }, storedRows: () => postgresRows(table) };
      };
    }
  }
}

function sqliteRows(path: string): Map<string, number> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const rows = db.prepare('SELECT client_ip AS ip, count(*) AS n FROM sessions GROUP BY client_ip').all() as Array<{ ip: string; n: number }>;
    return new Map(rows.map(({ ip, n }) => [ip, Number(n)]));
  } finally {
    db.close();
  }
}

/** Key of the count of IDs in the Redis index that have no record (the index and the records disagree). */
export const INDEXED_WITHOUT_RECORD = 'indexed without a record';

/**
 * The record hashes under `prefix` (keys `<prefix>s:<id>`, src/stores/redis-scripts.ts) by
 * their clientIp, and any surplus of the ID index (`<prefix>ids`) over them, so that an ID
 * indexed without its record counts too.
 */
async function redisRows(prefix: string): Promise<Map<string, number>> {
  const client = await rawClient();
  try {
    const rows = new Map<string, number>();
    let records = 0;
    for await (const keys of client.scanIterator({ MATCH: `${prefix}s:*`, COUNT: 1000 })) {
      const ips = await Promise.all(keys.map((key) => client.hGet(key, 'clientIp')));
      for (const ip of ips) rows.set(String(ip), (rows.get(String(ip)) ?? 0) + 1);
      records += keys.length;
    }
    const indexed = await client.zCard(`${prefix}ids`);
    if (indexed !== records) rows.set(INDEXED_WITHOUT_RECORD, indexed - records);
    return rows;
  } finally {
    client.destroy();
  }
}

async function postgresRows(table: string): Promise<Map<string, number>> {
  const { rows } = await withClient((client) =>
    client.query<{ ip: string; n: string }>(`SELECT client_ip AS ip, count(*) AS n FROM ${tableNames(table).sessions} GROUP BY client_ip`),
  );
  return new Map(rows.map(({ ip, n }) => [ip, Number(n)]));
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
      return { address: localAddress, visits: expected, wrong };
    },
  };
}

/**
 * What a flood of cookieless requests must leave behind (D1), asserted and printed; then the
 * server shuts down, and the store must hold the proven user's record and nothing else.
 */
export async function assertFloodContained(t: TestContext, hostile: HostileServer, result: FloodResult, user: { address: string; visits: number; wrong: string[] }, floodSources: string[]) {
  const server = hostile.t;
  await server.settle();
  const live = server.server.sessions.stats.live;
  const rows = await hostile.storedRows();
  const floodRows = floodSources.reduce((sum, source) => sum + (rows.get(source) ?? 0), 0);
  const overview = (await send(`${server.server.adminUrl}api/overview`, ADMIN)).json<{ sessions: { live: number; unproven: number; proven: number; suspendedKnown: number } }>();
  const { created, dropped, pushedOut, refusedNew, resumed } = server.server.sessions.stats;
  const figures = {
    store: hostile.store,
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
  // The control: at shutdown the proven user's session is written (the fixture's hook returns a
  // memento) and the unproven ones are not, and the count above sees that record where it
  // went, so its zero was read from the store the server writes to.
  const shutdown = await server.server.shutdown();
  const held = Object.fromEntries(await hostile.storedRows());
  t.diagnostic(`after shutdown: ${JSON.stringify({ shutdown, storedRows: held })}`);
  assert.equal(shutdown.lost, 0, 'nothing lost at shutdown');
  assert.deepEqual(held, { [user.address]: 1 }, 'the store holds the proven user and nothing of the flood');
}
