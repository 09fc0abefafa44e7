/**
 * Workload (i), issue 12: the hit counter for real clients while a cookieless flood comes from
 * another source, Resident against express-session and @fastify/session, both with
 * `saveUninitialized: false` and a SQLite store (./../contenders/sqlite-session-store.ts), as
 * Resident has its default SQLite store.
 *
 * The real clients are `connections` users from 127.0.0.1, each holding its own cookie from
 * one run to the next (opened before the warm-up, so the same users all along). The flood runs
 * beside them at full speed from 127.0.0.2, without a cookie, on a tenth as many connections
 * of its own. Resident runs with the sessions settings users get by default (maxContexts 100,
 * maxUnprovenPerIp 200) unless `cap` sets maxContexts.
 *
 * After the rounds each store is counted from this process (its SQLite file, read-only): the
 * records the flood left there, per flood request. A peer's flood records are its records less
 * the real clients' sessions (every one of which it saved: the counter changes the session);
 * Resident's are its records from 127.0.0.2, counted once more after a graceful shutdown,
 * which writes every live proven session and drops the unproven ones.
 */
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cookielessFlood, type FloodResult } from '../lib/cookieless-flood.ts';
import { PEERS, resident, type Contender, type ContenderSpec } from '../lib/contender.ts';
import { drive, type LoadResult } from '../lib/load.ts';
import { openSessions } from '../lib/proxy-load.ts';

/** What run.ts's table rows carry: the fields this workload fills in. */
export interface FloodRow {
  workload: string;
  contender: string;
  rps?: number;
  p99?: number;
  [extra: string]: unknown;
}

export interface FloodOptions {
  settings: { connections: number };
  threads: number[];
  /** Resident's sessions.maxContexts; undefined: the default. */
  cap: number | undefined;
  withContenders: <T>(specs: ContenderSpec[], body: (contenders: Contender[]) => Promise<T>) => Promise<T>;
  interleaved: (workload: string, contenders: Contender[], load: (contender: Contender, seconds: number) => Promise<LoadResult>) => Promise<FloodRow[]>;
  log: (message: string) => void;
}

const FLOOD_FROM = '127.0.0.2';
const PEER_FILES = ['express.ts', 'fastify.ts'];

interface Tally {
  flood: FloodResult;
  /** Every cookie the real clients were given (opened, or set again by the server later). */
  realCookies: Set<string>;
  realFailures: number;
  storePath: string;
}

export async function floodWorkload(options: FloodOptions): Promise<FloodRow[]> {
  const { connections } = options.settings;
  const floodConnections = Math.max(2, Math.round(connections / 10));
  const dir = mkdtempSync(join(tmpdir(), 'bench-i-'));
  const storeOf = (name: string) => join(dir, `${name}.db`);
  const residentEnv = { USER_DEFAULTS: '1', STORE: 'sqlite', ...(options.cap ? { MAX_CONTEXTS: String(options.cap) } : {}) };
  const specs: ContenderSpec[] = [
    ...PEERS.filter((peer) => PEER_FILES.includes(peer.file)).map((peer) => ({ ...peer, env: { STORE_PATH: storeOf(peer.file), SAVE_UNINITIALIZED: '0' } })),
    ...options.threads.map((threads) => resident(threads, { ...residentEnv, STORE_PATH: storeOf(`resident-${threads}`) })),
  ];
  options.log(
    `\ni: hit counter under a cookieless flood — ${connections} real clients from 127.0.0.1, ${floodConnections} flood connections from ${FLOOD_FROM}; Resident maxContexts ${options.cap ?? 'default'}`,
  );
  return options.withContenders(specs, async (contenders) => {
    const tallies = new Map<Contender, Tally & { cookies: string[] }>();
    for (const contender of contenders) {
      const cookies = await openSessions(contender.url, connections);
      const flood = { requests: 0, ok: 0, refused: 0, failed: 0 };
      tallies.set(contender, { cookies, flood, realCookies: new Set(cookies), realFailures: 0, storePath: contender.spec.env!.STORE_PATH! });
    }
    const rows = await options.interleaved('i', contenders, async (contender, seconds) => {
      const tally = tallies.get(contender)!;
      const [real, flood] = await Promise.all([
        drive(contender.url, { connections, seconds, cookies: tally.cookies, onCookie: (cookie) => tally.realCookies.add(cookie) }),
        cookielessFlood(contender.url, { connections: floodConnections, seconds, from: FLOOD_FROM }),
      ]);
      for (const key of ['requests', 'ok', 'refused', 'failed'] as const) tally.flood[key] += flood[key];
      tally.realFailures += real.errors + real.non2xx;
      return real;
    });
    for (const [i, contender] of contenders.entries()) {
      Object.assign(rows[i]!, await storeGrowth(contender, tallies.get(contender)!, options.cap));
    }
    return rows;
  });
}

/** Counts a contender's store after the run (and, for Resident, after its shutdown). */
async function storeGrowth(contender: Contender, tally: Tally, cap: number | undefined): Promise<Record<string, unknown>> {
  const { flood, realCookies, realFailures } = tally;
  const rss = contender.rss();
  const common = {
    floodRequests: flood.requests,
    floodRefused: flood.refused,
    floodFailed: flood.failed,
    realSessions: realCookies.size,
    realFailures,
    rssBytes: rss.now,
    peakRssBytes: rss.peak,
    store: 'SQLite',
  };
  if (contender.spec.file !== 'resident.ts') {
    const records = count(tally.storePath, 'SELECT COUNT(*) FROM sessions');
    const floodRecords = records - realCookies.size;
    return { ...common, records, floodRecords, floodRecordsPerRequest: floodRecords / flood.requests, config: 'saveUninitialized: false' };
  }
  const fromFlood = `SELECT COUNT(*) FROM sessions WHERE client_ip LIKE '%${FLOOD_FROM}'`;
  const records = count(tally.storePath, 'SELECT COUNT(*) FROM sessions');
  const floodRecords = count(tally.storePath, fromFlood);
  const stats = await contender.command('stats');
  await contender.command('shutdown');
  const { counters } = stats;
  return {
    ...common,
    records,
    floodRecords,
    floodRecordsPerRequest: floodRecords / flood.requests,
    recordsAfterShutdown: count(tally.storePath, 'SELECT COUNT(*) FROM sessions'),
    floodRecordsAfterShutdown: count(tally.storePath, fromFlood),
    config: cap ? `maxContexts ${cap}` : 'defaults (maxContexts 100)',
    counters: { created: counters.created, resumed: counters.resumed, evicted: counters.suspended.evicted, dropped: counters.dropped, pushedOut: counters.pushedOut, refusedNew: counters.refusedNew },
  };
}

function count(path: string, sql: string): number {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).pluck().get() as number;
  } finally {
    db.close();
  }
}

const fmt = (value: unknown, digits = 0) => (typeof value === 'number' && Number.isFinite(value) ? value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–');
const mib = (bytes: unknown) => fmt((bytes as number) / 2 ** 20);

/** The (i) table: real clients' req/s and p99 with their ratios to each peer, the flood's records, RSS. */
export function floodTable(rows: FloodRow[]): string[] {
  const set = rows.filter((row) => row.workload === 'i');
  if (set.length === 0) return [];
  const express = set.find((row) => row.contender.startsWith('express'))!;
  const fastify = set.find((row) => row.contender.startsWith('fastify'))!;
  const lines = [
    `## (i) hit counter under a cookieless flood — GET /, real clients from 127.0.0.1 with their cookies, a flood without one from ${FLOOD_FROM}`,
    '',
    '| contender | store, config | real req/s | ×fastify | ×express | real p99 ms | ×fastify p99 | ×express p99 | flood requests | flood records stored | per flood request | records after shutdown (flood) | RSS MiB (peak) | Node |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|',
  ];
  for (const row of set) {
    const afterShutdown = row.recordsAfterShutdown === undefined ? '–' : `${fmt(row.recordsAfterShutdown)} (${fmt(row.floodRecordsAfterShutdown)})`;
    lines.push(
      `| ${row.contender} | ${row.store}, ${row.config} | ${fmt(row.rps)} | ${fmt(row.rps! / fastify.rps!, 2)} | ${fmt(row.rps! / express.rps!, 2)} | ${fmt(row.p99, 1)} | ${fmt(row.p99! / fastify.p99!, 2)} | ${fmt(row.p99! / express.p99!, 2)} | ${fmt(row.floodRequests)} | ${fmt(row.floodRecords)} | ${fmt(row.floodRecordsPerRequest, 2)} | ${afterShutdown} | ${mib(row.rssBytes)} (${mib(row.peakRssBytes)}) | ${row.node ?? '–'} |`,
    );
  }
  lines.push('');
  for (const row of set) {
    const failures = `${fmt(row.realSessions)} real sessions, ${fmt(row.realFailures)} real requests failed; flood: ${fmt(row.floodRefused)} refused (429), ${fmt(row.floodFailed)} failed`;
    const counters = row.counters ? `; ${Object.entries(row.counters as Record<string, number>).map(([key, value]) => `${key} ${fmt(value)}`).join(', ')}` : '';
    lines.push(`- ${row.contender}: ${fmt(row.records)} records after the run; ${failures}${counters}.`);
  }
  lines.push('');
  return lines;
}
