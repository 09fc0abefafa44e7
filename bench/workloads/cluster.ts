/**
 * Workload (j), issue 14: Resident as a cluster. Three nodes of 2 threads each on this machine
 * (real CLI processes, ../lib/cluster.ts), on one redis-server of the bench's own (appendonly
 * yes, appendfsync always: what the README's cluster chapter asks for its guarantees), with the
 * hit counter hooks (../hooks).
 *
 * (j1) A forwarded request against a local one: sessions all owned by node a, driven through a
 *      (every request local) and through b (every request forwarded to a), interleaved rounds;
 *      req/s, p99, and the CPU of every node process per request (the Redis server's apart).
 * (j2) kill -9 of an owner: N sessions on a, checkpointed (`sessions.checkpointInterval`); a
 *      is killed and every client requests through b or c in a loop (every 100 ms) until it is
 *      served; time to the first and to the last served, against `cluster.leaseTimeout`.
 * (j3) Drain: 10,000 proven sessions on a, SIGTERM; time to exit and until its lease is gone
 *      from the store; then 1,000 of them requested through b: each must be found (resumed).
 * (j4) Behind HAProxy routing on the cluster's cookie: 3 nodes against one node, directly and
 *      behind the same HAProxy (its own cost apart from the cluster's gain); the clients keep
 *      every cookie they are set (drive's `jar`), as a browser does.
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { BenchCluster, BenchRedis, type ClusterNode, type NodeOptions } from '../lib/cluster.ts';
import { BenchHaproxy } from '../lib/haproxy.ts';
import { createSessions, drive, median, percentile, timeRequests, type LoadResult } from '../lib/load.ts';
import type { Row } from '../lib/row.ts';

export interface ClusterOptions {
  settings: { rounds: number; seconds: number; warmup: number; connections: number };
  quick: boolean;
  /** Which parts to run: j1, j2, j3, j4. */
  parts: Set<string>;
  /** (j2) sessions on the killed owner, and the leaseTimeouts to run it with. */
  takeoverSessions: number;
  leases: string[];
  /** (j3) contexts drained. */
  drainContexts: number;
  log: (message: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The machine's 1-minute load average now: the machine is shared, and the tables say how busy it was. */
const load1 = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
const NAMES = ['a', 'b', 'c'];
/** (j2) the checkpoint interval: what a killed owner loses at most. */
const CHECKPOINT = '1s';
/** (j2) how often a client whose request failed tries again. */
const RETRY_MS = 100;

async function openCluster(redis: BenchRedis, options: NodeOptions = {}): Promise<BenchCluster> {
  const cluster = new BenchCluster(redis);
  try {
    await Promise.all(NAMES.map((name) => cluster.start(name, options)));
  } catch (error) {
    await cluster.close();
    throw error;
  }
  return cluster;
}

export async function clusterWorkload(options: ClusterOptions): Promise<Row[]> {
  const { log, parts } = options;
  log('\nj: cluster — 3 nodes × 2 threads on one bench redis-server (appendonly yes, appendfsync always)');
  const redis = await BenchRedis.start();
  const rows: Row[] = [];
  try {
    if (parts.has('j1')) rows.push(...(await forwardCost(redis, options)));
    if (parts.has('j2')) for (const lease of options.leases) rows.push(await takeover(redis, lease, options));
    if (parts.has('j3')) rows.push(await drain(redis, options));
    if (parts.has('j4')) rows.push(...(await balanced(redis, options)));
  } finally {
    await redis.stop();
  }
  return rows;
}

interface Target {
  name: string;
  url: string;
}

interface Meter {
  name: string;
  cpuMs: () => number;
}

/**
 * Every target under `load`, interleaved and rotating as run.ts's `interleaved`, after a warm-up
 * each: one row per target with the medians of its rounds. CPU per request is read from each
 * meter (a set of processes) around every load; `around` adds figures of its own per load.
 */
async function rounds(
  workload: string,
  targets: Target[],
  meters: Meter[],
  settings: ClusterOptions['settings'],
  load: (target: Target, seconds: number) => Promise<LoadResult>,
  log: (message: string) => void,
  around?: () => Promise<() => Promise<Record<string, number>>>,
): Promise<Row[]> {
  for (const target of targets) await load(target, settings.warmup);
  const samples = new Map<Target, Array<Record<string, number>>>();
  const failures = new Map<Target, number>();
  for (let round = 0; round < settings.rounds; round++) {
    const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
    for (const target of order) {
      const extra = around && (await around());
      const loadBefore = load1();
      const before = meters.map((m) => m.cpuMs());
      const result = await load(target, settings.seconds);
      const after = meters.map((m) => m.cpuMs());
      const sample: Record<string, number> = { rps: result.rps, p50: result.p50, p99: result.p99, requests: result.requests, load: loadBefore };
      meters.forEach((m, i) => (sample[`cpu:${m.name}`] = ((after[i]! - before[i]!) * 1000) / Math.max(1, result.requests)));
      if (extra) Object.assign(sample, await extra());
      if (sample.forwards !== undefined) sample.forwardsPerRequest = sample.forwards / Math.max(1, result.requests);
      failures.set(target, (failures.get(target) ?? 0) + result.errors + result.non2xx);
      if (result.errors || result.non2xx) log(`  ${target.name}: ${result.errors} errors, ${result.non2xx} non-2xx`);
      samples.set(target, [...(samples.get(target) ?? []), sample]);
      const cpu = meters.map((m) => `${m.name} ${sample[`cpu:${m.name}`]!.toFixed(1)}`).join(', ');
      log(`  round ${round + 1} ${target.name}: ${result.rps.toFixed(0)} req/s, p99 ${result.p99} ms, CPU µs/req: ${cpu}`);
    }
  }
  return targets.map((target) => {
    const list = samples.get(target)!;
    const row: Row = { workload, contender: target.name, failures: failures.get(target) ?? 0 };
    for (const key of Object.keys(list[0]!)) row[key === 'cpu:nodes' ? 'cpuUsPerRequest' : key] = median(list.map((s) => s[key]!));
    row.loads = list.map((s) => s.load);
    row.rpsRounds = list.map((s) => Math.round(s.rps!));
    return row;
  });
}

const nodesMeter = (cluster: BenchCluster): Meter => ({ name: 'nodes', cpuMs: () => cluster.cpuMs() });
const redisMeter = (redis: BenchRedis): Meter => ({ name: 'redis', cpuMs: () => redis.cpuMs() });

/** The sum of a metric over the nodes. */
async function sumMetric(nodes: ClusterNode[], name: string, label?: string): Promise<number> {
  let sum = 0;
  for (const node of nodes) sum += await node.metric(name, label);
  return sum;
}

/** (j1): the same sessions, all owned by a, through a and through b. */
async function forwardCost(redis: BenchRedis, options: ClusterOptions): Promise<Row[]> {
  const { settings, log } = options;
  // One session per connection (50 to 100 in a full run): no two requests of one session at once.
  const sessions = settings.connections;
  log(`\nj1: forwarded vs local — ${sessions} sessions owned by node a, through a and through b, ${settings.rounds} rounds × ${settings.seconds}s`);
  const cluster = await openCluster(redis);
  try {
    const [a, b] = [cluster.node('a'), cluster.node('b')];
    const cookies = await createSessions(a.url, sessions, 16, sessions, true);
    const live = await a.metric('resident_sessions', 'state="live"');
    if (live < sessions) throw new Error(`node a holds ${live} live sessions, not ${sessions}`);
    const targets = [
      { name: 'local: through a, the owner', url: a.url },
      { name: 'forwarded: through b to a', url: b.url },
    ];
    const nodes = [...cluster.nodes.values()];
    const rows = await rounds(
      'j1',
      targets,
      [nodesMeter(cluster), { name: 'a', cpuMs: () => a.cpuMs() }, { name: 'b', cpuMs: () => b.cpuMs() }, redisMeter(redis)],
      settings,
      (target, seconds) => drive(target.url, { connections: sessions, seconds, cookies: [...cookies] }),
      log,
      async () => {
        const [forwards, claims] = [await sumMetric(nodes, 'resident_cluster_forwards_total'), await sumMetric(nodes, 'resident_cluster_claims_total')];
        return async () => ({
          forwards: (await sumMetric(nodes, 'resident_cluster_forwards_total')) - forwards,
          claims: (await sumMetric(nodes, 'resident_cluster_claims_total')) - claims,
        });
      },
    );
    for (const row of rows) {
      row.sessions = sessions;
      row.node = a.node?.version;
    }
    // Still every session on a: nothing moved to b while it forwarded.
    rows[0]!.stillOnA = await a.metric('resident_sessions', 'state="live"');
    return rows;
  } finally {
    await cluster.close();
  }
}

/** (j2): kill -9 of the owner of `count` checkpointed sessions; how soon b and c serve them. */
async function takeover(redis: BenchRedis, leaseTimeout: string, options: ClusterOptions): Promise<Row> {
  const { log } = options;
  const count = options.takeoverSessions;
  log(`\nj2: kill -9 — ${count} sessions on node a (checkpointInterval ${CHECKPOINT}), cluster.leaseTimeout ${leaseTimeout}; clients retry through b and c every ${RETRY_MS} ms`);
  const cluster = await openCluster(redis, { leaseTimeout, checkpointInterval: CHECKPOINT });
  try {
    const [a, b, c] = NAMES.map((name) => cluster.node(name));
    // Proven (the cookie sent back once): the counter stands at 2.
    const cookies = await createSessions(a!.url, count, 16, count, true);
    const checkpointed = await waitForCheckpoints(a!, count);
    const agents = new Map([b!, c!].map((node) => [node, new Agent({ connections: 32, pipelining: 1 })]));
    const loadAtKill = load1();
    const killedAt = performance.now();
    cluster.signal('a', 'SIGKILL');
    const leaseGone = (async () => {
      while (await cluster.hasLease('a')) await sleep(20);
      return performance.now() - killedAt;
    })();
    const statuses = new Map<string, number>();
    const served: number[] = [];
    const bodies = new Map<string, number>();
    const deadline = killedAt + 60_000 + 10 * parseDuration(leaseTimeout);
    await Promise.all(
      cookies.map(async (cookie, i) => {
        const through = i % 2 ? b! : c!;
        while (performance.now() < deadline) {
          try {
            const answer = await request(`${through.url}/`, { dispatcher: agents.get(through), headers: { cookie } });
            const body = await answer.body.text();
            if (answer.statusCode === 200) {
              served.push(performance.now() - killedAt);
              bodies.set(body, (bodies.get(body) ?? 0) + 1);
              return;
            }
            statuses.set(String(answer.statusCode), (statuses.get(String(answer.statusCode)) ?? 0) + 1);
          } catch (error) {
            const code = (error as { code?: string }).code ?? 'error';
            statuses.set(code, (statuses.get(code) ?? 0) + 1);
          }
          await sleep(RETRY_MS);
        }
      }),
    );
    for (const agent of agents.values()) await agent.close();
    const leaseGoneMs = await leaseGone;
    const takeovers = await sumMetric([b!, c!], 'resident_cluster_takeovers_total');
    const row: Row = {
      workload: 'j2',
      contender: `leaseTimeout ${leaseTimeout}`,
      leaseMs: parseDuration(leaseTimeout),
      load: loadAtKill,
      sessions: count,
      checkpointed,
      leaseGoneMs,
      firstMs: served.length ? Math.min(...served) : undefined,
      p50Ms: percentile(served, 50),
      allMs: served.length === count ? Math.max(...served) : undefined,
      served: served.length,
      found: bodies.get('3') ?? 0,
      fresh: bodies.get('1') ?? 0,
      takeovers,
      statuses: Object.fromEntries(statuses),
      // What b and c logged meanwhile (warn and above), by event: one line per failed forward?
      logged: Object.fromEntries([...new Set([...b!.events.keys(), ...c!.events.keys()])].map((event) => [event, (b!.events.get(event) ?? 0) + (c!.events.get(event) ?? 0)])),
      node: b!.node?.version,
    };
    log(`  lease gone after ${leaseGoneMs.toFixed(0)} ms; first served ${fmt(row.firstMs)} ms, all ${fmt(row.allMs)} ms; ${row.found} of ${count} from their checkpoint, ${row.fresh} new; before: ${JSON.stringify(row.statuses)}`);
    return row;
  } finally {
    await cluster.close();
  }
}

/** Until a has checkpointed `count` contexts (at most 15 s); how many it had. */
async function waitForCheckpoints(node: ClusterNode, count: number): Promise<number> {
  const deadline = performance.now() + 15_000;
  for (;;) {
    const done = await node.metric('resident_suspensions_total', 'reason="checkpoint"');
    if (done >= count || performance.now() > deadline) return done;
    await sleep(200);
  }
}

function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!match) throw new Error(`a duration like 2s or 500ms, not ${text}`);
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[match[2] as 'ms' | 's' | 'm'];
}

/** (j3): SIGTERM of a node holding `count` proven contexts; then a sample through b. */
async function drain(redis: BenchRedis, options: ClusterOptions): Promise<Row> {
  const { log } = options;
  const count = options.drainContexts;
  const sample = Math.min(count, 1000);
  log(`\nj3: drain — ${count.toLocaleString('en')} proven sessions on node a, SIGTERM, then ${sample} of them through b`);
  const cluster = await openCluster(redis);
  try {
    const a = cluster.node('a');
    const b = cluster.node('b');
    const started = performance.now();
    const cookies = await createSessions(a.url, count, 64, sample, true);
    const createMs = performance.now() - started;
    const live = await a.metric('resident_sessions', 'state="live"');
    const loadAtStop = load1();
    const stoppedAt = performance.now();
    cluster.signal('a', 'SIGTERM');
    const leaseGone = (async () => {
      while (await cluster.hasLease('a')) await sleep(20);
      return performance.now() - stoppedAt;
    })();
    const exit = await a.exited;
    const leaseGoneMs = await leaseGone;
    const { latencies, bodies } = await timeRequests(b.url, cookies, 64);
    // The counter stood at 2: 3 is the session back; anything else, lost.
    const found = bodies.get('3') ?? 0;
    const row: Row = {
      workload: 'j3',
      contender: `node a, ${count.toLocaleString('en')} contexts`,
      contexts: count,
      load: loadAtStop,
      live,
      createMs,
      stopMs: exit.at - stoppedAt,
      exitCode: exit.code,
      leaseGoneMs,
      requested: latencies.length,
      found,
      lost: latencies.length - found,
      againP50: percentile(latencies, 50),
      againP99: percentile(latencies, 99),
      claims: await b.metric('resident_cluster_claims_total'),
      node: b.node?.version,
    };
    log(`  created in ${(createMs / 1000).toFixed(1)} s; SIGTERM to exit ${fmt(row.stopMs)} ms (code ${exit.code}), lease gone after ${leaseGoneMs.toFixed(0)} ms; ${found} of ${latencies.length} found through b`);
    return row;
  } finally {
    await cluster.close();
  }
}

/** (j4): one node directly, one node behind HAProxy, three nodes behind the same HAProxy. */
async function balanced(redis: BenchRedis, options: ClusterOptions): Promise<Row[]> {
  const { settings, log } = options;
  log(`\nj4: behind HAProxy — 3 nodes against 1, ${settings.connections} clients keeping every cookie, ${settings.rounds} rounds × ${settings.seconds}s`);
  // As deploy/haproxy.cfg asks of the nodes behind it: X-Forwarded-For believed from loopback.
  const cluster = await openCluster(redis, { sessions: { trustProxy: ['loopback'] } });
  let haproxy: BenchHaproxy | undefined;
  try {
    const nodes = NAMES.map((name) => cluster.node(name));
    const server = (node: ClusterNode) => ({ nodeId: node.name, url: node.url });
    haproxy = await BenchHaproxy.start([
      { name: 'one', servers: [server(nodes[0]!)] },
      { name: 'three', servers: nodes.map(server) },
    ]);
    const proxy = haproxy;
    const targets = [
      { name: 'one node, directly', url: nodes[0]!.url },
      { name: 'one node behind HAProxy', url: proxy.url('one') },
      { name: 'three nodes behind HAProxy', url: proxy.url('three') },
    ];
    const rows = await rounds(
      'j4',
      targets,
      [nodesMeter(cluster), { name: 'haproxy', cpuMs: () => proxy.cpuMs() }, redisMeter(redis)],
      settings,
      // Fresh clients every load (as in (a)): each connection's first request opens a session.
      (target, seconds) => drive(target.url, { connections: settings.connections, seconds, jar: true }),
      log,
      async () => {
        const created = await Promise.all(nodes.map((node) => node.metric('resident_sessions_created_total')));
        const forwards = await sumMetric(nodes, 'resident_cluster_forwards_total');
        return async () => {
          const after = await Promise.all(nodes.map((node) => node.metric('resident_sessions_created_total')));
          const sample: Record<string, number> = { forwards: (await sumMetric(nodes, 'resident_cluster_forwards_total')) - forwards };
          nodes.forEach((node, i) => (sample[`created:${node.name}`] = after[i]! - created[i]!));
          return sample;
        };
      },
    );
    for (const row of rows) row.node = nodes[0]!.node?.version;
    rows[0]!.haproxyConfig = proxy.config;
    for (const row of rows) row.haproxyShipped = proxy.shipped;
    return rows;
  } finally {
    await haproxy?.stop();
    await cluster.close();
  }
}

/** Per target: req/s of each round and the machine's load average as each began. */
const roundLines = (set: Row[]) =>
  set.map((row) => `${row.contender}: rounds ${((row.rpsRounds as number[]) ?? []).map((v) => fmt(v)).join(', ')} req/s; load average ${((row.loads as number[]) ?? []).map((v) => fmt(v, 1)).join(', ')}.`);

const fmt = (value: unknown, digits = 0) => (typeof value === 'number' && Number.isFinite(value) ? value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–');
const ratio = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? fmt(a / b, 2) : '–');

/** The (j) tables, BENCHMARKS-style: ratios within the run. */
export function clusterTable(rows: Row[]): string[] {
  const lines: string[] = [];
  const j1 = rows.filter((r) => r.workload === 'j1');
  if (j1.length) {
    const local = j1[0]!;
    lines.push(
      `## (j1) cluster: a forwarded request against a local one — ${fmt(local.sessions)} sessions owned by node a, one per connection`,
      '',
      '| path | req/s | ×local | p50 ms | p99 ms | ×local p99 | nodes CPU µs/req | ×local CPU | of which a | of which b | Redis CPU µs/req | forwards/req | failures | Node |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    );
    for (const row of j1) {
      lines.push(
        `| ${row.contender} | ${fmt(row.rps)} | ${ratio(row.rps, local.rps)} | ${fmt(row.p50, 1)} | ${fmt(row.p99, 1)} | ${ratio(row.p99, local.p99)} | ${fmt(row.cpuUsPerRequest, 1)} | ${ratio(row.cpuUsPerRequest, local.cpuUsPerRequest)} | ${fmt(row['cpu:a'], 1)} | ${fmt(row['cpu:b'], 1)} | ${fmt(row['cpu:redis'], 1)} | ${fmt(row.forwardsPerRequest, 2)} | ${fmt(row.failures)} | ${row.node ?? '–'} |`,
      );
    }
    lines.push('', `Nodes CPU: the three node processes, every thread counted. After the rounds node a still held ${fmt(local.stillOnA)} live sessions.`, ...roundLines(j1), '');
  }
  const j2 = rows.filter((r) => r.workload === 'j2');
  if (j2.length) {
    lines.push(
      `## (j2) cluster: kill -9 of an owner — ${fmt(j2[0]!.sessions)} sessions on node a (checkpointInterval ${CHECKPOINT}), clients retrying through b and c every ${RETRY_MS} ms`,
      '',
      '| cluster.leaseTimeout | load at the kill | lease gone, ms | first served, ms | ×lease | half served, ms | all served, ms | ×lease | from their checkpoint | new (lost) | takeovers | answers before | checkpointed before the kill |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|',
    );
    for (const row of j2) {
      const before = Object.entries((row.statuses as Record<string, number>) ?? {}).map(([status, n]) => `${status}: ${fmt(n)}`).join(', ') || 'none';
      lines.push(
        `| ${fmt((row.leaseMs as number) / 1000, 0)} s | ${fmt(row.load, 1)} | ${fmt(row.leaseGoneMs)} | ${fmt(row.firstMs)} | ${ratio(row.firstMs, row.leaseMs)} | ${fmt(row.p50Ms)} | ${fmt(row.allMs)} | ${ratio(row.allMs, row.leaseMs)} | ${fmt(row.found)} of ${fmt(row.sessions)} | ${fmt(row.fresh)} | ${fmt(row.takeovers)} | ${before} | ${fmt(row.checkpointed)} |`,
      );
    }
    lines.push('', 'Times from the kill. Lease gone: when the store no longer listed a\'s lease (polled every 20 ms); a lease is renewed every third of leaseTimeout, so it ends between ⅔ and all of leaseTimeout after a kill. From their checkpoint: answers with the counter at 3 (it stood at 2).');
    for (const row of j2) {
      const logged = Object.entries((row.logged as Record<string, number>) ?? {}).map(([event, n]) => `${event} ${fmt(n)}`).join(', ');
      lines.push(`leaseTimeout ${fmt((row.leaseMs as number) / 1000, 0)} s: b and c logged (warn and above) ${logged || 'nothing'}.`);
    }
    lines.push('');
  }
  for (const row of rows.filter((r) => r.workload === 'j3')) {
    lines.push(
      `## (j3) cluster: drain — ${fmt(row.contexts)} proven sessions on node a, SIGTERM, then ${fmt(row.requested)} of them through node b`,
      '',
      '| load at SIGTERM | live on a | create and prove, s | SIGTERM to exit, ms | lease gone, ms | exit code | found through b | lost | again p50 ms | again p99 ms | claims on b |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      `| ${fmt(row.load, 1)} | ${fmt(row.live)} | ${fmt((row.createMs as number) / 1000, 1)} | ${fmt(row.stopMs)} | ${fmt(row.leaseGoneMs)} | ${row.exitCode ?? '–'} | ${fmt(row.found)} of ${fmt(row.requested)} | ${fmt(row.lost)} | ${fmt(row.againP50, 2)} | ${fmt(row.againP99, 2)} | ${fmt(row.claims)} |`,
      '',
    );
  }
  const j4 = rows.filter((r) => r.workload === 'j4');
  if (j4.length) {
    const direct = j4[0]!;
    const proxied = j4[1]!;
    lines.push(
      '## (j4) cluster: behind HAProxy routing on `resident_node` — 3 nodes against 1, every client keeping both cookies',
      '',
      '| setup | req/s | ×one node directly | ×one node behind HAProxy | p50 ms | p99 ms | nodes CPU µs/req | HAProxy CPU µs/req | Redis CPU µs/req | all CPU ×directly | forwards | sessions opened on a / b / c | failures |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|',
    );
    const total = (row: Row) => (row.cpuUsPerRequest as number) + (row['cpu:haproxy'] as number) + (row['cpu:redis'] as number);
    for (const row of j4) {
      lines.push(
        `| ${row.contender} | ${fmt(row.rps)} | ${ratio(row.rps, direct.rps)} | ${ratio(row.rps, proxied.rps)} | ${fmt(row.p50, 1)} | ${fmt(row.p99, 1)} | ${fmt(row.cpuUsPerRequest, 1)} | ${fmt(row['cpu:haproxy'], 1)} | ${fmt(row['cpu:redis'], 1)} | ${ratio(total(row), total(direct))} | ${fmt(row.forwards)} | ${NAMES.map((n) => fmt(row[`created:${n}`])).join(' / ')} | ${fmt(row.failures)} |`,
      );
    }
    lines.push(
      '',
      ...roundLines(j4),
      `Medians of the rounds (forwards and sessions opened: per load). Nodes CPU: all three node processes; HAProxy (its default threads) and the redis-server apart. All on the same 2 cores as autocannon. HAProxy ran ${direct.haproxyShipped ? 'deploy/haproxy.cfg (ports replaced; its frontend and backend once for one node and once for three; request logging to stdout as shipped, to /dev/null here; the nodes with sessions.trustProxy ["loopback"] as it asks)' : 'a minimal configuration (deploy/haproxy.cfg was not there)'}: the configuration is in the results .json.`,
      '',
    );
  }
  return lines;
}
