/**
 * `npm run bench`: every contender as its own process on loopback, driven by autocannon with
 * every connection a distinct client holding its own cookie; contenders interleaved in
 * rotating order over several rounds after a warm-up; one table of req/s, p50/p99 latency and
 * server CPU per request, each with its ratio to bare node:http + Map from the same run.
 * Writes bench/results/<time>.json and .md (and latest.md).
 *
 *   npm run bench                          the full run (about 35 minutes)
 *   npm run bench -- --quick               seconds, one round: a smoke run
 *   npm run bench -- --workloads a,b,g     a subset
 *   npm run bench -- --baseline REF        also run Resident as of commit REF (before/after)
 *   npm run bench -- --sessions N          sessions shared by the connections in (h) (100)
 *   npm run bench -- --threads 1,2,4       Resident's thread counts in (a), (b), (c), (h) and (i) (1,2)
 *   npm run bench -- --cap N               Resident's sessions.maxContexts in (i) (default: the default, 100)
 *   npm run bench -- --stores sqlite,redis the stores of (c) and (f) (sqlite,redis,postgres): Resident's,
 *                                          and the peers' among sqlite and redis; one not answering is skipped
 *   npm run bench -- --workloads j         the cluster (issue 14), not in the default run; j1,j3 runs parts
 *   npm run bench -- --workloads j2 --leases 2s,10s --takeover 200   (j2) per leaseTimeout, sessions killed
 *   npm run bench -- --workloads j3 --drain 10000                    (j3) contexts drained
 *
 * (i) is the hit counter under a cookieless flood from another address (issue 12), Resident
 * against express-session and @fastify/session with SQLite stores: bench/workloads/flood.ts.
 * (c) resume-heavy and (f) shutdown/resume run Resident on SQLite, Redis and PostgreSQL, and
 * the peers on Redis (connect-redis) and SQLite, in the same run (issue 13):
 * bench/workloads/shared-stores.ts.
 *
 * Every contender runs on this process's Node (process.execPath), checked per process.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, totalmem } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { announceNode } from './lib/announce-node.ts';
import { baseline } from './lib/baseline.ts';
import { Contender, PEERS, resident, type ContenderSpec } from './lib/contender.ts';
import { createSessions, drive, median, type LoadResult } from './lib/load.ts';
import { driveSessions, openSessions, readCounters } from './lib/proxy-load.ts';
import type { Row } from './lib/row.ts';
import { clusterTable, clusterWorkload } from './workloads/cluster.ts';
import { floodTable, floodWorkload } from './workloads/flood.ts';
import { resumeHeavyTable, resumeHeavyWorkload, shutdownTable, shutdownWorkload } from './workloads/shared-stores.ts';

const ROOT = resolve(import.meta.dirname, '..');
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    workloads: { type: 'string', default: 'a,b,c,d,e,f,g,h,i' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    scale: { type: 'string' },
    contexts: { type: 'string' },
    sessions: { type: 'string', default: '100' },
    threads: { type: 'string', default: '1,2' },
    cap: { type: 'string' },
    stores: { type: 'string', default: 'sqlite,redis,postgres' },
    leases: { type: 'string', default: '2s,10s' },
    takeover: { type: 'string' },
    drain: { type: 'string' },
    baseline: { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'bench/results') },
  },
});
const quick = args.quick!;
const settings = {
  rounds: Number(args.rounds ?? (quick ? 1 : 3)),
  seconds: Number(args.seconds ?? (quick ? 1 : 10)),
  warmup: Number(args.warmup ?? (quick ? 1 : 3)),
  connections: Number(args.connections ?? (quick ? 10 : 100)),
  scale: (args.scale ?? (quick ? '200,1000' : '1000,100000,1000000')).split(',').map(Number),
  contexts: Number(args.contexts ?? (quick ? 1000 : 100_000)),
  sessions: Number(args.sessions),
};
const workloads = new Set(args.workloads!.split(','));

const rows: Row[] = [];
const log = (message: string) => process.stderr.write(`${message}\n`);
announceNode(ROOT);

async function withContenders<T>(specs: ContenderSpec[], body: (contenders: Contender[]) => Promise<T>): Promise<T> {
  const contenders = specs.map((spec) => new Contender(spec));
  try {
    for (const contender of contenders) await contender.start();
    return await body(contenders);
  } finally {
    await Promise.all(contenders.map((contender) => contender.stop()));
  }
}

/** The contenders of (a), (b) and (h): the peers, Resident with each --threads count, the baselines. */
let baselineSpecs: ContenderSpec[] | undefined;
function throughputSpecs(): ContenderSpec[] {
  baselineSpecs ??= (args.baseline ?? '').split(',').filter(Boolean).map((ref) => baseline(ref, 2));
  return [...PEERS, ...args.threads!.split(',').map((threads) => resident(Number(threads))), ...baselineSpecs];
}

/**
 * Every contender under `load`, interleaved A B C D …, rotating, for several rounds after a
 * warm-up each; one row per contender with the medians of its rounds.
 */
async function interleaved(workload: string, contenders: Contender[], load: (contender: Contender, seconds: number) => Promise<LoadResult>): Promise<Row[]> {
  for (const contender of contenders) await load(contender, settings.warmup);
  const samples = new Map<Contender, Array<{ rps: number; p50: number; p99: number; cpu: number }>>();
  for (let round = 0; round < settings.rounds; round++) {
    const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
    for (const contender of order) {
      const cpuBefore = contender.cpuMs();
      const result = await load(contender, settings.seconds);
      const cpu = ((contender.cpuMs() - cpuBefore) * 1000) / Math.max(1, result.requests);
      if (result.errors || result.non2xx) log(`  ${contender.spec.name}: ${result.errors} errors, ${result.non2xx} non-2xx`);
      const list = samples.get(contender) ?? [];
      list.push({ rps: result.rps, p50: result.p50, p99: result.p99, cpu });
      samples.set(contender, list);
      log(`  round ${round + 1} ${contender.spec.name}: ${result.rps.toFixed(0)} req/s, p99 ${result.p99} ms, ${cpu.toFixed(1)} µs CPU/req`);
    }
  }
  return contenders.map((contender) => {
    const list = samples.get(contender)!;
    return {
      workload,
      contender: contender.spec.name,
      rps: median(list.map((s) => s.rps)),
      p50: median(list.map((s) => s.p50)),
      p99: median(list.map((s) => s.p99)),
      cpuUsPerRequest: median(list.map((s) => s.cpu)),
      node: contender.node?.version,
    };
  });
}

/** (a), (b): every connection a distinct client with its own cookie, all on one path. */
async function throughput(workload: string, path: string): Promise<void> {
  log(`\n${workload}: ${path} — ${settings.rounds} rounds × ${settings.seconds}s, ${settings.connections} clients`);
  await withContenders(throughputSpecs(), async (contenders) => {
    rows.push(...(await interleaved(workload, contenders, (contender, seconds) => drive(contender.url, { connections: settings.connections, seconds, path }))));
  });
}

/**
 * (h), proxy-like: the hit counter with `settings.sessions` sessions spread at random over the
 * connections, a different session on (almost) every request. At the end the counters of all
 * sessions must add up to the requests the server acknowledged; the difference is lost updates.
 */
async function proxyLike(): Promise<void> {
  const { sessions, connections } = settings;
  log(`\nh: proxy-like — ${sessions} sessions at random over ${connections} connections, ${settings.rounds} rounds × ${settings.seconds}s`);
  await withContenders(throughputSpecs(), async (contenders) => {
    const pools = new Map<Contender, string[]>();
    for (const contender of contenders) pools.set(contender, await openSessions(contender.url, sessions));
    const tally = new Map(contenders.map((contender) => [contender, { ok: 0, unanswered: 0, non2xx: 0 }]));
    const results = await interleaved('h', contenders, async (contender, seconds) => {
      const result = await driveSessions(contender.url, pools.get(contender)!, { connections, seconds });
      const sum = tally.get(contender)!;
      sum.ok += result.ok;
      sum.unanswered += result.unanswered;
      sum.non2xx += result.non2xx;
      return result;
    });
    for (const [i, contender] of contenders.entries()) {
      const counters = await readCounters(contender.url, pools.get(contender)!);
      const { ok, unanswered, non2xx } = tally.get(contender)!;
      // One request per session opened it, one more read the counters back: both count.
      const served = ok + 2 * sessions;
      const counted = counters.reduce((a, b) => a + b, 0);
      Object.assign(results[i]!, { served, counted, lost: served - counted, unanswered, non2xx, note: lostNote(served, counted, unanswered, non2xx) });
    }
    rows.push(...results);
  });
}

/** "0 lost of 123,456", "1,234 lost of 98,765 (1.25 %)"; unanswered requests widen it to a range. */
function lostNote(served: number, counted: number, unanswered: number, non2xx: number): string {
  const n = (value: number) => value.toLocaleString('en');
  const low = served - counted;
  const high = low + unanswered; // an unanswered request may or may not have been counted
  const parts = [
    high < 0
      ? `${n(-high)} more counted than requested`
      : low === high
        ? `${n(low)} lost of ${n(served)}${low ? ` (${((100 * low) / served).toFixed(2)} %)` : ''}`
        : `${n(Math.max(0, low))}–${n(high)} lost of ${n(served)}`,
  ];
  if (unanswered) parts.push(`${n(unanswered)} unanswered`);
  if (non2xx) parts.push(`${n(non2xx)} non-2xx`);
  return parts.join(', ');
}

/** (d): the hit counter with N live contexts already in memory. */
async function scale(): Promise<void> {
  log(`\nd: scale — hit counter with ${settings.scale.join(' / ')} live contexts`);
  for (const count of settings.scale) {
    await withContenders([resident(2)], async ([contender]) => {
      const started = performance.now();
      // Proven (each cookie sent back once): unproven sessions of one address are capped by
      // sessions.maxUnprovenPerIp (issue 12), and these stand for real returning users.
      await createSessions(contender!.url, count, 64, 0, true);
      log(`  created ${count} contexts in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      await drive(contender!.url, { connections: settings.connections, seconds: settings.warmup });
      const samples = [];
      for (let round = 0; round < settings.rounds; round++) {
        samples.push(await drive(contender!.url, { connections: settings.connections, seconds: settings.seconds }));
      }
      const stats = await contender!.command('stats');
      rows.push({
        workload: 'd',
        contender: `Resident, 2 threads, ${count.toLocaleString('en')} contexts`,
        rps: median(samples.map((s) => s.rps)),
        p50: median(samples.map((s) => s.p50)),
        p99: median(samples.map((s) => s.p99)),
        contexts: count,
        note: `${stats.live} live`,
      });
    });
  }
}

/** (e): heap and RSS per live idle context with empty vars, main thread and workers. */
async function memory(): Promise<void> {
  const count = settings.contexts;
  log(`\ne: memory — ${count} live idle contexts`);
  await withContenders([resident(2, { EMPTY_VARS: '1' })], async ([contender]) => {
    const before = await contender!.command('stats', { gc: true });
    await createSessions(contender!.url, count, 64, 0, true);
    const after = await contender!.command('stats', { gc: true });
    const workerHeap = (stats: any) => stats.workers.reduce((sum: number, w: any) => sum + w.heapUsed, 0);
    const per = (a: number, b: number) => (b - a) / count;
    rows.push({
      workload: 'e',
      contender: 'Resident, 2 threads',
      contexts: count,
      mainHeapPerContext: per(before.heapUsed, after.heapUsed),
      workerHeapPerContext: per(workerHeap(before), workerHeap(after)),
      heapPerContext: per(before.heapUsed + workerHeap(before), after.heapUsed + workerHeap(after)),
      rssPerContext: per(before.rss, after.rss),
    });
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

/** (g): `npm start` to the first answered request, as a user runs it. */
async function startup(): Promise<void> {
  const tries = quick ? 1 : 5;
  log(`\ng: startup — npm start to the first answered request, ${tries}×`);
  const times: number[] = [];
  for (let i = 0; i < tries; i++) {
    const port = await freePort();
    const started = performance.now();
    // This Node first on PATH, so npm and the start script run on it like every other contender
    // (npm still puts node_modules/.bin first: on Linux x64 that is the Node 24 npm installed).
    const path = `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`;
    const child = spawn('npm', ['start', '--silent'], { cwd: ROOT, env: { ...process.env, PATH: path, PORT: String(port) }, detached: true, stdio: 'ignore' });
    for (;;) {
      try {
        const response = await request(`http://127.0.0.1:${port}/`);
        await response.body.dump();
        if (response.statusCode === 200) break;
      } catch {
        await new Promise((r) => setTimeout(r, 10));
      }
      if (performance.now() - started > 30_000) throw new Error('npm start did not answer within 30 s');
    }
    times.push(performance.now() - started);
    process.kill(-child.pid!, 'SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  rows.push({ workload: 'g', contender: 'Resident (npm start, demo)', startupMs: median(times), note: `median of ${tries}: ${times.map((t) => t.toFixed(0)).join(', ')} ms` });
}

const fmt = (value: unknown, digits = 0) => (typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–');

function report(): string {
  const lines: string[] = [];
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`;
  lines.push(`# Resident benchmark — ${new Date().toISOString()}`, '', `Machine: ${machine}.`);
  lines.push(`Node: ${process.version} (${process.execPath}) for the runner, autocannon and every contender (each contender's binary checked through /proc).`);
  lines.push(`Settings: ${JSON.stringify(settings)}${quick ? ' (quick smoke run: not for comparison)' : ''}.`, '');
  for (const [workload, title] of [
    ['a', 'hit counter — GET /, every connection its own client'],
    ['b', 'cached selection — GET /select, every connection its own client'],
    ['h', `proxy-like — GET /, ${settings.sessions} sessions at random over ${settings.connections} connections`],
  ] as const) {
    const set = rows.filter((row) => row.workload === workload);
    if (set.length === 0) continue;
    const bare = set.find((row) => row.contender.startsWith('bare'))!;
    const lost = workload === 'h';
    lines.push(`## (${workload}) ${title}`, '');
    lines.push(
      `| contender | req/s | ×bare | p50 ms | p99 ms | ×bare p99 | CPU µs/req | ×bare CPU |${lost ? ' lost updates |' : ''} Node |`,
      `|---|---:|---:|---:|---:|---:|---:|---:|${lost ? '---|' : ''}---|`,
    );
    for (const row of set) {
      lines.push(
        `| ${row.contender} | ${fmt(row.rps)} | ${fmt(row.rps! / bare.rps!, 2)} | ${fmt(row.p50, 1)} | ${fmt(row.p99, 1)} | ${fmt(row.p99! / bare.p99!, 2)} | ${fmt(row.cpuUsPerRequest, 1)} | ${fmt(row.cpuUsPerRequest! / bare.cpuUsPerRequest!, 2)} |${lost ? ` ${row.note} |` : ''} ${row.node ?? '–'} |`,
      );
    }
    const express = set.find((row) => row.contender.startsWith('express'));
    const fastify = set.find((row) => row.contender.startsWith('fastify'));
    for (const r of set.filter((row) => row.contender.startsWith('Resident'))) {
      lines.push('', `${r.contender}: ×fastify ${fmt(r.rps! / fastify!.rps!, 2)}, ×express ${fmt(r.rps! / express!.rps!, 2)}.`);
    }
    lines.push('');
  }
  lines.push(...resumeHeavyTable(rows));
  const d = rows.filter((row) => row.workload === 'd');
  if (d.length) {
    const base = d[0]!;
    lines.push('## (d) scale — hit counter with N live contexts', '', '| contexts | req/s | ×smallest | p50 ms | p99 ms |', '|---:|---:|---:|---:|---:|');
    for (const row of d) lines.push(`| ${(row.contexts as number).toLocaleString('en')} | ${fmt(row.rps)} | ${fmt(row.rps! / base.rps!, 2)} | ${fmt(row.p50, 1)} | ${fmt(row.p99, 1)} |`);
    lines.push('');
  }
  for (const row of rows.filter((r) => r.workload === 'e')) {
    lines.push(`## (e) memory — ${(row.contexts as number).toLocaleString('en')} live idle contexts, empty vars`, '');
    lines.push(`Per context: heap ${fmt(row.heapPerContext)} B (main ${fmt(row.mainHeapPerContext)} B + workers ${fmt(row.workerHeapPerContext)} B), RSS ${fmt(row.rssPerContext)} B.`, '');
  }
  lines.push(...shutdownTable(rows));
  lines.push(...floodTable(rows));
  lines.push(...clusterTable(rows));
  for (const row of rows.filter((r) => r.workload === 'g')) {
    lines.push('## (g) startup', '', `\`npm start\` to the first answered request: ${fmt(row.startupMs)} ms (${row.note}).`, '');
  }
  return lines.join('\n');
}

if (workloads.has('a')) await throughput('a', '/');
if (workloads.has('b')) await throughput('b', '/select');
if (workloads.has('h')) await proxyLike();
const storeOptions = () => ({ settings, threads: args.threads!.split(',').map(Number), stores: args.stores!.split(','), withContenders, interleaved, log });
if (workloads.has('c')) rows.push(...(await resumeHeavyWorkload(storeOptions())));
if (workloads.has('d')) await scale();
if (workloads.has('e')) await memory();
if (workloads.has('f')) rows.push(...(await shutdownWorkload(storeOptions())));
if (workloads.has('g')) await startup();
if (workloads.has('i')) {
  const threads = args.threads!.split(',').map(Number);
  const cap = args.cap === undefined ? undefined : Number(args.cap);
  rows.push(...(await floodWorkload({ settings, threads, cap, withContenders, interleaved, log })));
}
const clusterParts = new Set(['j1', 'j2', 'j3', 'j4'].filter((part) => workloads.has('j') || workloads.has(part)));
if (clusterParts.size) {
  rows.push(
    ...(await clusterWorkload({
      settings,
      quick,
      parts: clusterParts,
      leases: args.leases!.split(','),
      takeoverSessions: Number(args.takeover ?? (quick ? 20 : 200)),
      drainContexts: Number(args.drain ?? (quick ? 500 : 10_000)),
      log,
    })),
  );
}

const markdown = report();
process.stdout.write(`${markdown}\n`);
mkdirSync(args.out!, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
writeFileSync(join(args.out!, `${stamp}${quick ? '-quick' : ''}.json`), JSON.stringify({ settings, rows }, null, 2));
writeFileSync(join(args.out!, `${stamp}${quick ? '-quick' : ''}.md`), markdown);
// latest.md is the last complete run; a subset or a quick run does not replace it.
if (!quick && workloads.size === 9) writeFileSync(join(args.out!, 'latest.md'), markdown);
