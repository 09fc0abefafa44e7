/**
 * Workloads (c) and (f), issue 13: Resident's store round trips on SQLite, Redis and PostgreSQL
 * in one run, beside the peers with a store of their own.
 *
 * (c) resume-heavy: every request of the hit counter resumes its context from the store and
 * suspends it again (`sessions.suspendEveryRequest`), 100 clients each with its own cookie.
 * The peers do what they do on every request anyway: read the session from their store and,
 * the counter having changed it, write it back. express-session and @fastify/session each run
 * on Redis through connect-redis, and on SQLite through the bench's own store
 * (../contenders/sqlite-session-store.ts). All contenders interleaved, medians of the rounds.
 *
 * (f) shutdown and resume: Resident (2 threads) creates N contexts, suspends them all into the
 * store at shutdown, restarts, and 10,000 of them are requested once (64 at a time): each a
 * resume. A peer has no suspend: each session was written to Redis by the request that created
 * it, so its shutdown is only its process stopping; after its restart the same 10,000 cookies
 * are requested, each a first read of the session from Redis. The time to create the N
 * sessions is reported for every contender, as that is where a peer pays its writes.
 *
 * Redis and PostgreSQL: BENCH_REDIS_URL (redis://127.0.0.1:6379) and BENCH_POSTGRES_URL
 * (postgres://postgres@127.0.0.1:5432/test, as the tests). Every contender gets a key prefix or a table of its own,
 * deleted or dropped after the workload; a store that does not answer is skipped, and said so.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createClient } from 'redis';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { PEERS, resident, type Contender, type ContenderSpec } from '../lib/contender.ts';
import { createSessions, drive, percentile, timeRequests, type LoadResult } from '../lib/load.ts';
import type { Row } from '../lib/row.ts';

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface StoreOptions {
  settings: { connections: number; contexts: number };
  threads: number[];
  /** Which of Resident's stores to run: sqlite, redis, postgres. */
  stores: string[];
  withContenders: <T>(specs: ContenderSpec[], body: (contenders: Contender[]) => Promise<T>) => Promise<T>;
  interleaved: (workload: string, contenders: Contender[], load: (contender: Contender, seconds: number) => Promise<LoadResult>) => Promise<Row[]>;
  log: (message: string) => void;
}

type StoreName = 'SQLite' | 'Redis' | 'PostgreSQL';

/** A store for one contender: its environment, and how to remove what it wrote. */
interface Place {
  store: StoreName;
  env: Record<string, string>;
  remove: () => Promise<void>;
}

const unique = () => `resident_bench_${process.pid}_${randomBytes(4).toString('hex')}`;

function sqlitePlace(): Place {
  const dir = mkdtempSync(join(tmpdir(), 'bench-store-'));
  return { store: 'SQLite', env: { STORE: 'sqlite', STORE_PATH: join(dir, 'contexts.db') }, remove: async () => rmSync(dir, { recursive: true, force: true }) };
}

function redisPlace(): Place {
  const prefix = `${unique()}:`;
  return { store: 'Redis', env: { STORE: 'redis', STORE_URL: REDIS_URL, STORE_PREFIX: prefix }, remove: () => removeRedisPrefix(prefix) };
}

function postgresPlace(): Place {
  const table = unique();
  return { store: 'PostgreSQL', env: { STORE: 'postgres', STORE_URL: POSTGRES_URL, STORE_TABLE: table }, remove: () => dropPostgresTable(table) };
}

const PLACES: Record<string, () => Place> = { sqlite: sqlitePlace, redis: redisPlace, postgres: postgresPlace };

async function redisClient() {
  const client = createClient({ url: REDIS_URL, socket: { connectTimeout: 2000, reconnectStrategy: false } });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Deletes every key under `prefix` (a bench prefix: never one a user's Resident writes). */
async function removeRedisPrefix(prefix: string): Promise<void> {
  const client = await redisClient();
  try {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      if (keys.length > 0) await client.del(keys);
    }
  } finally {
    client.destroy();
  }
}

async function withPostgres<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function dropPostgresTable(table: string): Promise<void> {
  const t = tableNames(table);
  await withPostgres((client) => client.query(`DROP TABLE IF EXISTS ${t.sessions}, ${t.quarantine}, ${t.meta}`));
}

/** Why `store` cannot be used here, or undefined when it answers. */
async function unavailable(store: string): Promise<string | undefined> {
  try {
    if (store === 'redis') (await redisClient()).destroy();
    if (store === 'postgres') await withPostgres((client) => client.query('SELECT 1'));
    return undefined;
  } catch (error) {
    return `${store === 'redis' ? REDIS_URL : POSTGRES_URL} does not answer (${(error as Error).message || String(error)})`;
  }
}

/** The stores of `wanted` that answer; each one that does not is logged and listed in `skipped`. */
async function availableStores(wanted: string[], log: (message: string) => void, skipped: string[]): Promise<string[]> {
  const stores: string[] = [];
  for (const store of wanted) {
    if (!PLACES[store]) throw new Error(`unknown store ${store}: sqlite, redis or postgres`);
    const why = await unavailable(store);
    if (why) {
      log(`  ${store}: skipped, ${why}`);
      skipped.push(`${store}: ${why}`);
    } else stores.push(store);
  }
  return stores;
}

interface Entry {
  spec: ContenderSpec;
  place: Place;
  peer: boolean;
}

const residentEntry = (threads: number, place: Place, env: Record<string, string> = {}): Entry => {
  const spec = resident(threads, { ...place.env, ...env });
  return { spec: { ...spec, name: `${spec.name}, ${place.store}` }, place, peer: false };
};

/** express and fastify, each on a store of its own: Redis through connect-redis, or SQLite. */
function peerEntries(stores: string[]): Entry[] {
  const entries: Entry[] = [];
  for (const store of stores.filter((s) => s === 'sqlite' || s === 'redis')) {
    for (const peer of PEERS.filter((p) => p.file !== 'bare.ts')) {
      // The same environment as Resident's: ../contenders/peer-store.ts reads STORE and STORE_PATH alike.
      const place = PLACES[store]!();
      entries.push({ spec: { ...peer, name: `${peer.name}, ${store === 'redis' ? 'Redis (connect-redis)' : 'SQLite'}`, env: place.env }, place, peer: true });
    }
  }
  return entries;
}

async function removeAll(entries: Entry[], log: (message: string) => void): Promise<void> {
  for (const { spec, place } of entries) await place.remove().catch((error) => log(`  ${spec.name}: could not remove its records: ${error}`));
}

/** (c): the resume-heavy hit counter, Resident on each store and thread count, the peers on theirs. */
export async function resumeHeavyWorkload(options: StoreOptions): Promise<Row[]> {
  const { log } = options;
  log('\nc: resume-heavy — every request resumed from the store and suspended again; the peers read and write their store on every request');
  const skipped: string[] = [];
  const stores = await availableStores(options.stores, log, skipped);
  const entries = [...stores.flatMap((store) => options.threads.map((threads) => residentEntry(threads, PLACES[store]!(), { SUSPEND_EVERY: '1' }))), ...peerEntries(stores)];
  try {
    const rows = await options.withContenders(
      entries.map((entry) => entry.spec),
      async (contenders) => {
        const failures = new Map<Contender, number>();
        const rows = await options.interleaved('c', contenders, async (contender, seconds) => {
          const result = await drive(contender.url, { connections: options.settings.connections, seconds });
          failures.set(contender, (failures.get(contender) ?? 0) + result.errors + result.non2xx);
          return result;
        });
        for (const [i, contender] of contenders.entries()) {
          const { place, peer } = entries[i]!;
          let note = `${failures.get(contender) ?? 0} failures`;
          if (!peer) {
            const { counters } = await contender.command('stats');
            note = `${counters.resumed.toLocaleString('en')} resumes, ${counters.suspended.idle.toLocaleString('en')} suspends, ${note}`;
          }
          Object.assign(rows[i]!, { store: place.store, peer, threads: peer ? undefined : Number(contender.spec.env!.THREADS), note });
        }
        return rows;
      },
    );
    return [...rows, ...skipped.map((why) => ({ workload: 'c', contender: 'skipped', note: why }))];
  } finally {
    await removeAll(entries, log);
  }
}

/** (f): suspend N contexts at shutdown and resume after a restart, per store; the Redis peers beside. */
export async function shutdownWorkload(options: StoreOptions): Promise<Row[]> {
  const { log } = options;
  const count = options.settings.contexts;
  const sample = Math.min(count, 10_000);
  log(`\nf: shutdown — ${count.toLocaleString('en')} sessions created, the server stopped (Resident: every context suspended into its store) and restarted, ${sample.toLocaleString('en')} requested again`);
  const skipped: string[] = [];
  const stores = await availableStores(options.stores, log, skipped);
  const entries = [...stores.map((store) => residentEntry(2, PLACES[store]!())), ...peerEntries(stores.filter((store) => store === 'redis'))];
  const rows: Row[] = [];
  try {
    for (const entry of entries) rows.push(await shutdownAndResume(entry, count, sample, options));
  } finally {
    await removeAll(entries, log);
  }
  return [...rows, ...skipped.map((why) => ({ workload: 'f', contender: 'skipped', note: why }))];
}

async function shutdownAndResume({ spec, place, peer }: Entry, count: number, sample: number, options: StoreOptions): Promise<Row> {
  const row: Row = { workload: 'f', contender: spec.name, store: place.store, peer, contexts: count };
  const cookies = await options.withContenders([spec], async ([contender]) => {
    const started = performance.now();
    // Proven sessions (each cookie sent back once, the counter at 2): an unproven one is not stored.
    const kept = await createSessions(contender!.url, count, 64, sample, true);
    row.createMs = performance.now() - started;
    row.node = contender!.node?.version;
    if (peer) {
      // No suspend to run: the store already holds every session; the process only stops.
      const stopping = performance.now();
      await contender!.stop();
      Object.assign(row, { shutdownMs: performance.now() - stopping, suspended: undefined, lost: undefined });
    } else {
      const result = await contender!.command('shutdown');
      Object.assign(row, { shutdownMs: result.ms, suspended: result.suspended, lost: result.lost });
    }
    return kept;
  });
  await options.withContenders([spec], async ([contender]) => {
    const { latencies, bodies } = await timeRequests(contender!.url, cookies, 64);
    // The counter stood at 2 before the stop: 3 is the session back, 1 a new one in its place.
    const found = bodies.get('3') ?? 0;
    Object.assign(row, { requestedAgain: latencies.length, found, resumeP50: percentile(latencies, 50), resumeP99: percentile(latencies, 99) });
    if (!peer) row.resumes = (await contender!.command('stats')).counters.resumed;
  });
  options.log(`  ${spec.name}: created in ${((row.createMs as number) / 1000).toFixed(1)} s, stopped in ${(row.shutdownMs as number).toFixed(0)} ms, ${row.found} of ${row.requestedAgain} found again, p99 ${(row.resumeP99 as number).toFixed(1)} ms`);
  return row;
}

const fmt = (value: unknown, digits = 0) => (typeof value === 'number' && Number.isFinite(value) ? value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–');
const ratio = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? fmt(a / b, 2) : '–');

/** The (c) table: req/s, p99 and CPU with ratios to Resident on SQLite (same threads) and to the Redis peers. */
export function resumeHeavyTable(rows: Row[]): string[] {
  const set = rows.filter((row) => row.workload === 'c' && row.contender !== 'skipped');
  if (set.length === 0) return [];
  const sqliteOf = (row: Row) => set.find((r) => !r.peer && r.store === 'SQLite' && r.threads === (row.peer ? 2 : row.threads));
  const express = set.find((r) => r.peer && r.store === 'Redis' && r.contender.startsWith('express'));
  const fastify = set.find((r) => r.peer && r.store === 'Redis' && r.contender.startsWith('fastify'));
  const lines = [
    '## (c) resume-heavy — GET /, every request resumed from the store and suspended after (Resident); the peers read and write their store on every request',
    '',
    '| contender | req/s | ×Resident SQLite | ×fastify Redis | ×express Redis | p50 ms | p99 ms | ×Resident SQLite p99 | CPU µs/req | ×Resident SQLite CPU | note | Node |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  for (const row of set) {
    const base = sqliteOf(row);
    lines.push(
      `| ${row.contender} | ${fmt(row.rps)} | ${ratio(row.rps, base?.rps)} | ${ratio(row.rps, fastify?.rps)} | ${ratio(row.rps, express?.rps)} | ${fmt(row.p50, 1)} | ${fmt(row.p99, 1)} | ${ratio(row.p99, base?.p99)} | ${fmt(row.cpuUsPerRequest, 1)} | ${ratio(row.cpuUsPerRequest, base?.cpuUsPerRequest)} | ${row.note} | ${row.node ?? '–'} |`,
    );
  }
  lines.push('', '×Resident SQLite: against Resident on SQLite with the same threads (the peers: against 2 threads).', ...skippedLines(rows, 'c'), '');
  return lines;
}

/** The (f) table: create, stop, and the first request after the restart, per contender and store. */
export function shutdownTable(rows: Row[]): string[] {
  const set = rows.filter((row) => row.workload === 'f' && row.contender !== 'skipped');
  if (set.length === 0) return [];
  const sqlite = set.find((r) => !r.peer && r.store === 'SQLite');
  const lines = [
    `## (f) shutdown and resume — ${fmt(set[0]!.contexts)} sessions, the server stopped and restarted, each of ${fmt(set[0]!.requestedAgain)} requested again (64 at a time)`,
    '',
    '| contender | create and prove, s | stop, ms | ×Resident SQLite stop | suspended at stop (lost) | found again | again p50 ms | again p99 ms | ×Resident SQLite p99 | resumes | Node |',
    '|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|',
  ];
  for (const row of set) {
    const suspended = row.peer ? 'none: written by each request' : `${fmt(row.suspended)} (${fmt(row.lost)})`;
    lines.push(
      `| ${row.contender} | ${fmt((row.createMs as number) / 1000, 1)} | ${fmt(row.shutdownMs)} | ${ratio(row.shutdownMs, sqlite?.shutdownMs)} | ${suspended} | ${fmt(row.found)} of ${fmt(row.requestedAgain)} | ${fmt(row.resumeP50, 2)} | ${fmt(row.resumeP99, 2)} | ${ratio(row.resumeP99, sqlite?.resumeP99)} | ${row.peer ? '–' : fmt(row.resumes)} | ${row.node ?? '–'} |`,
    );
  }
  lines.push(
    '',
    'Each session was created and its cookie sent back once (two requests: a proven session). Found again: answers with the counter at 3, the session as it was before the stop.',
    'A peer has no suspend: its stop is the process exiting, and its requests after the restart each read the session from Redis.',
    ...set
      .filter((row) => row.found !== row.requestedAgain)
      .map((row) => `${row.contender}: ${fmt(row.found)} of ${fmt(row.requestedAgain)} found again; its "again" latencies are mostly of new sessions, not resumes.`),
    ...skippedLines(rows, 'f'),
    '',
  );
  return lines;
}

const skippedLines = (rows: Row[], workload: string) => rows.filter((row) => row.workload === workload && row.contender === 'skipped').map((row) => `Skipped: ${row.note}.`);
