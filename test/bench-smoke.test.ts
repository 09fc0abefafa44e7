/**
 * Keeps `npm run bench` from rotting: one quick round of the hit counter (a) and of the
 * proxy-like workload (h) against every contender. It asserts that the run completes and
 * reports every contender on this Node, and that no server that serializes a session's
 * requests lost an update under (h); never a speed. And one quick round of (i), the hit
 * counter under a cookieless flood: the flood's records in every store, none in Resident's.
 * And one quick round of (c) and (f) on SQLite, Redis and PostgreSQL beside the peers on
 * connect-redis: every request served, and every session back after (f)'s restart.
 * And one quick round of (j), the cluster: forwarded requests forwarded and local ones not, every
 * session taken over after kill -9 and found after a drain, none forwarded behind HAProxy.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ROOT, skipOrFailOnCi } from './helpers.ts';
import { POSTGRES_URL, postgresUnavailable } from './stores/postgres-helpers.ts';
import { REDIS_URL, redisUnavailable } from './stores/redis-helpers.ts';

const CONTENDERS = ['bare node:http + Map', 'express + express-session', 'fastify + @fastify/session', 'Resident, 1 thread', 'Resident, 2 threads'];

interface Row {
  workload: string;
  contender: string;
  node?: string;
  served?: number;
  lost?: number;
  unanswered?: number;
}

test('a quick bench run drives every contender through (a) and (h) and writes its tables', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'resident-bench-'));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/run.ts', '--quick', '--workloads', 'a,h', '--seconds', '1', '--warmup', '0.5', '--out', out],
    { cwd: ROOT, maxBuffer: 10 * 1024 * 1024 },
  );
  const [a = '', h = ''] = stdout.split('\n## (h)');
  assert.ok(a.includes('## (a)') && h !== '', 'the output has an (a) table and an (h) table after it');
  for (const [workload, table] of [['a', a], ['h', h]] as const) {
    for (const contender of CONTENDERS) {
      const row = table.split('\n').find((line) => line.startsWith(`| ${contender} |`));
      assert.ok(row, `the (${workload}) table has a row for ${contender}`);
      const rps = Number(row.split('|')[2]);
      assert.ok(rps > 0, `${contender} answered requests in (${workload}) (${row})`);
    }
  }
  assert.ok(stdout.includes(`Node: ${process.version} (${process.execPath})`), 'the results name the Node that ran them');

  const files = readdirSync(out);
  const json = files.find((file) => file.endsWith('.json'));
  assert.ok(json && files.some((file) => file.endsWith('.md')), `results written: ${files.join(', ')}`);
  const { rows } = JSON.parse(readFileSync(join(out, json), 'utf8')) as { rows: Row[] };
  assert.equal(rows.filter((row) => row.workload === 'a').length, 5);
  assert.equal(rows.filter((row) => row.workload === 'h').length, 5);
  for (const row of rows) assert.equal(row.node, process.version, `${row.contender} (${row.workload}) ran on the bench's Node`);
  for (const row of rows.filter((r) => r.workload === 'h')) {
    assert.ok(row.served! > 200 && Number.isInteger(row.lost), `${row.contender}: (h) accounted its updates`);
    // An unanswered request may have been counted or not: a correct server counts between all
    // the acknowledged updates and those plus the unanswered ones.
    if (row.contender.startsWith('bare') || row.contender.startsWith('Resident')) {
      assert.ok(row.lost! <= 0 && row.lost! + row.unanswered! >= 0, `${row.contender} lost no update: ${JSON.stringify(row)}`);
    }
  }
});

interface FloodRow extends Row {
  rps?: number;
  floodRequests?: number;
  floodRecords?: number;
  floodRecordsPerRequest?: number;
  recordsAfterShutdown?: number;
  floodRecordsAfterShutdown?: number;
  rssBytes?: number;
}

test('a quick bench run of (i) reports the flood\'s store growth for every contender', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'resident-bench-'));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/run.ts', '--quick', '--workloads', 'i', '--seconds', '1', '--warmup', '0.5', '--out', out],
    { cwd: ROOT, maxBuffer: 10 * 1024 * 1024 },
  );
  const table = stdout.split('\n## (i)')[1] ?? '';
  assert.ok(table.includes('| flood records stored |'), 'the output has an (i) table with the store-growth column');

  const json = readdirSync(out).find((file) => file.endsWith('.json'));
  assert.ok(json, 'results written');
  const { rows } = JSON.parse(readFileSync(join(out, json), 'utf8')) as { rows: FloodRow[] };
  const flood = rows.filter((row) => row.workload === 'i');
  assert.deepEqual(flood.map((row) => row.contender), CONTENDERS.filter((name) => !name.startsWith('bare')));
  for (const row of flood) {
    assert.equal(row.node, process.version, `${row.contender} ran on the bench's Node`);
    assert.ok(row.rps! > 0 && row.floodRequests! > 0 && row.rssBytes! > 0, `${row.contender} served the real clients and the flood: ${JSON.stringify(row)}`);
    assert.ok(Number.isInteger(row.floodRecords), `${row.contender}: the flood's records were counted`);
    assert.ok(table.split('\n').some((line) => line.startsWith(`| ${row.contender} |`)), `the (i) table has a row for ${row.contender}`);
    if (row.contender.startsWith('Resident')) {
      // Unproven sessions are dropped without a write, at the cap and at shutdown alike (README, "Hostile traffic").
      assert.equal(row.floodRecords, 0, `${row.contender} stored no flood session`);
      assert.equal(row.floodRecordsAfterShutdown, 0, `${row.contender} stored no flood session at shutdown`);
      assert.ok(row.recordsAfterShutdown! > 0, `${row.contender} wrote its real clients' sessions at shutdown`);
    } else {
      // The hit counter changes the session, so saveUninitialized: false still saves each one.
      assert.ok(row.floodRecords! > 0 && row.floodRecords! <= row.floodRequests!, `${row.contender}: the flood reached its store (${row.floodRecords} of ${row.floodRequests})`);
    }
  }
});

interface StoreRow extends Row {
  rps?: number;
  note?: string;
  peer?: boolean;
  suspended?: number;
  lost?: number;
  requestedAgain?: number;
  found?: number;
}

test('a quick bench run of (c) and (f) drives Resident on every store and the peers on Redis, and finds every session again', { timeout: 180_000 }, async (t) => {
  const unavailable = (await redisUnavailable()) ?? (await postgresUnavailable());
  if (unavailable) return skipOrFailOnCi(t, unavailable);
  const out = mkdtempSync(join(tmpdir(), 'resident-bench-'));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/run.ts', '--quick', '--workloads', 'c,f', '--seconds', '1', '--warmup', '0.5', '--contexts', '300', '--out', out],
    { cwd: ROOT, maxBuffer: 10 * 1024 * 1024, env: { ...process.env, BENCH_REDIS_URL: REDIS_URL, BENCH_POSTGRES_URL: POSTGRES_URL } },
  );
  assert.ok(stdout.includes('## (c)') && stdout.includes('## (f)'), 'the output has a (c) table and an (f) table');
  const json = readdirSync(out).find((file) => file.endsWith('.json'));
  assert.ok(json, 'results written');
  const { rows } = JSON.parse(readFileSync(join(out, json), 'utf8')) as { rows: StoreRow[] };
  const names = (workload: string) => rows.filter((row) => row.workload === workload).map((row) => row.contender);
  const stores = ['SQLite', 'Redis', 'PostgreSQL'];
  const peersOn = (...on: string[]) => on.flatMap((store) => ['express + express-session', 'fastify + @fastify/session'].map((peer) => `${peer}, ${store}`));
  assert.deepEqual(names('c'), [...stores.flatMap((store) => [`Resident, 1 thread, ${store}`, `Resident, 2 threads, ${store}`]), ...peersOn('SQLite', 'Redis (connect-redis)')]);
  assert.deepEqual(names('f'), [...stores.map((store) => `Resident, 2 threads, ${store}`), ...peersOn('Redis (connect-redis)')]);
  for (const row of rows) assert.equal(row.node, process.version, `${row.contender} (${row.workload}) ran on the bench's Node`);
  for (const row of rows.filter((r) => r.workload === 'c')) {
    assert.ok(row.rps! > 0 && /(^|, )0 failures$/.test(row.note!), `${row.contender} served (c) without a failure: ${JSON.stringify(row)}`);
    if (!row.peer) assert.match(row.note!, /^[1-9][\d,]* resumes/, `${row.contender} resumed from its store in (c)`);
  }
  for (const row of rows.filter((r) => r.workload === 'f')) {
    // Proven sessions: each one is stored (by the shutdown, or by a peer's requests) and comes back.
    if (!row.peer) assert.deepEqual([row.suspended, row.lost], [300, 0], `${row.contender} suspended every context at shutdown`);
    assert.deepEqual([row.found, row.requestedAgain], [300, 300], `${row.contender} found every session again after the restart`);
  }
});

/** The programs (j) starts besides the nodes: its own redis-server, and HAProxy for (j4). */
function clusterBenchUnavailable(): string | undefined {
  for (const [program, flag] of [['redis-server', '--version'], ['haproxy', '-v']]) {
    const probe = spawnSync(program!, [flag!], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) return `${program} is not installed (${probe.error?.message ?? `exit ${probe.status}`})`;
  }
  return undefined;
}

test('a quick bench run of (j) forwards through b, takes over after kill -9, loses nothing in a drain and routes on the cookie behind HAProxy', { timeout: 300_000 }, async (t) => {
  const unavailable = clusterBenchUnavailable();
  if (unavailable) return skipOrFailOnCi(t, unavailable);
  const out = mkdtempSync(join(tmpdir(), 'resident-bench-'));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/run.ts', '--quick', '--workloads', 'j', '--seconds', '1', '--warmup', '0.5', '--leases', '2s', '--takeover', '10', '--drain', '200', '--out', out],
    { cwd: ROOT, maxBuffer: 10 * 1024 * 1024 },
  );
  for (const table of ['j1', 'j2', 'j3', 'j4']) assert.ok(stdout.includes(`## (${table})`), `the output has a (${table}) table`);
  const json = readdirSync(out).find((file) => file.endsWith('.json'));
  assert.ok(json, 'results written');
  const { rows } = JSON.parse(readFileSync(join(out, json), 'utf8')) as { rows: Array<Record<string, any>> };
  const of = (workload: string) => rows.filter((row) => row.workload === workload);
  const [local, forwarded] = of('j1');
  assert.deepEqual([local!.forwardsPerRequest, local!.failures, forwarded!.failures], [0, 0, 0], `(j1) no request through a forwarded, none failed: ${JSON.stringify(of('j1'))}`);
  assert.ok(forwarded!.forwardsPerRequest >= 0.99, `(j1) every request through b forwarded: ${forwarded!.forwardsPerRequest}`);
  const [takeover] = of('j2');
  assert.deepEqual([takeover!.found, takeover!.fresh, takeover!.served], [10, 0, 10], `(j2) every session back from its checkpoint: ${JSON.stringify(takeover)}`);
  assert.ok(takeover!.firstMs >= takeover!.leaseGoneMs - 100, `(j2) none served before a's lease was gone: ${JSON.stringify(takeover)}`);
  const [drained] = of('j3');
  assert.deepEqual([drained!.exitCode, drained!.found, drained!.lost], [0, 200, 0], `(j3) a clean drain, every session found through b: ${JSON.stringify(drained)}`);
  const [, , three] = of('j4');
  for (const row of of('j4')) assert.equal(row.failures, 0, `(j4) ${row.contender} without a failure`);
  assert.equal(three!.forwards, 0, '(j4) behind HAProxy, no request was forwarded');
  for (const name of ['a', 'b', 'c']) assert.ok(three![`created:${name}`] > 0, `(j4) node ${name} opened sessions: ${JSON.stringify(three)}`);
  for (const row of rows) assert.equal(row.node, process.version, `${row.contender} (${row.workload}) ran on the bench's Node`);
});
