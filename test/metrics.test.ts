/**
 * Prometheus metrics (src/ops/metrics.ts) against real servers: where they are served (under
 * the admin path behind its token, or on a listener of their own without one, or nowhere), and
 * that each one moves with the real event it counts: sessions created, idle suspends and
 * resumes, evictions at the cap, IP mismatches, 503s by code, request latency by status class,
 * worker load, and store operations by outcome (a real file store whose folder vanishes).
 * The exposition text is parsed here with a small regex reader, no client library.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { ResidentConfigInput } from '../src/config.ts';
import { isResidentError } from '../src/errors.ts';
import { MemoryStore } from '../src/stores/memory.ts';
import { Metrics } from '../src/ops/metrics.ts';
import { record } from './stores/contract.ts';
import type { ContextStore } from '../src/stores/store.ts';
import {
  Client,
  FIXTURE_HOOKS,
  ManualClock,
  ROOT,
  childLogs,
  describeChild,
  fixtureState,
  runMain,
  send,
  startTestServer,
  waitFor,
  writeTempConfig,
  type TestServer,
} from './helpers.ts';

const TOKEN = 'metrics-test-token-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const MIN = 60_000;

// ---------------------------------------------------------------------------------------------
// Plumbing

const servers = new Set<TestServer>();
const clients = new Set<Client>();
const tempDirs: string[] = [];
after(async () => {
  await Promise.all([...clients].map((c) => c.close()));
  await Promise.all([...servers].map((s) => s.close()));
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

async function server(overrides: ResidentConfigInput = {}, clock?: ManualClock): Promise<TestServer> {
  const t = await startTestServer({ workers: { threads: 1 }, ...overrides }, clock);
  servers.add(t);
  return t;
}

/** A server whose metrics are under the admin path (the default place). */
const adminServer = (overrides: ResidentConfigInput = {}, clock?: ManualClock) => server({ admin: { token: TOKEN }, ...overrides }, clock);

function client(t: TestServer, options: ConstructorParameters<typeof Client>[1] = {}): Client {
  const c = new Client(t.url, options);
  clients.add(c);
  return c;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-metrics-'));
  tempDirs.push(dir);
  return dir;
}

/** One parsed sample of the Prometheus text format. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  samples: Sample[];
  /** metric family name → counter | gauge | histogram | ... */
  types: Map<string, string>;
  text: string;
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;

/** Reads the text exposition format (version 0.0.4) line by line. */
function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const type = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (type) types.set(type[1]!, type[2]!);
      continue;
    }
    const match = SAMPLE_LINE.exec(line);
    assert.ok(match, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(LABEL_PAIR)) {
      labels[pair[1]!] = pair[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const raw = match[3]!;
    // Prometheus reads NaN in any case (Go's ParseFloat); prom-client writes "Nan".
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : /^nan$/i.test(raw) ? NaN : Number(raw);
    assert.ok(!Number.isNaN(value) || /^nan$/i.test(raw), `not a number in ${JSON.stringify(line)}`);
    samples.push({ name: match[1]!, labels, value });
  }
  return { samples, types, text };
}

/** The samples named `name` whose labels include `labels`. */
function matching(m: Exposition, name: string, labels: Record<string, string> = {}): Sample[] {
  return m.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The one sample named `name` with exactly these labels (undefined: none). */
function sample(m: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = m.samples.filter(
    (s) => s.name === name && Object.keys(s.labels).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} appears ${found.length} times`);
  return found[0]?.value;
}

/** The sum of every sample named `name` whose labels include `labels` (0 when none: a counter not yet moved). */
function total(m: Exposition, name: string, labels: Record<string, string> = {}): number {
  return matching(m, name, labels).reduce((sum, s) => sum + s.value, 0);
}

/** One scrape, where this server serves its metrics (with the token when under the admin path). */
async function scrape(t: TestServer): Promise<Exposition> {
  const url = t.server.metricsUrl;
  assert.ok(url, 'this server serves metrics');
  const onAdmin = t.server.adminUrl !== null && url.startsWith(t.server.adminUrl);
  const reply = await send(url, { headers: onAdmin ? AUTH : {} });
  assert.equal(reply.status, 200, reply.text);
  assert.match(String(reply.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  assert.deepEqual(reply.setCookies, [], 'a scrape sets no cookie');
  return parseExposition(reply.text);
}

/** Scrapes until `check` holds for a scrape, and returns that scrape. */
async function scrapeUntil(t: TestServer, check: (m: Exposition) => boolean, what: string, timeoutMs = 5000): Promise<Exposition> {
  let last: Exposition | undefined;
  try {
    return await waitFor<Exposition | false>(async () => {
      last = await scrape(t);
      return check(last) && last;
    }, timeoutMs, what) as Exposition;
  } catch (error) {
    const ours = last?.text.split('\n').filter((l) => l.startsWith('resident_') && !/^resident_(process|nodejs)_/.test(l) && !l.includes('_bucket')).join('\n');
    throw new Error(`${(error as Error).message}\nlast scrape:\n${ours}`);
  }
}

/** A port nothing listens on (bound, read and released). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Tries a TCP connection; resolves with the error code, or 'connected'. */
function connectTo(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, host);
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

const REQUESTS = 'resident_request_duration_seconds';
const STORE_OPS = 'resident_store_operation_duration_seconds';

// ---------------------------------------------------------------------------------------------
// Where metrics are served

test('under the admin path, metrics need the bearer token and are in the exposition format', async () => {
  const t = await adminServer();
  assert.equal(t.server.metricsUrl, `${t.server.adminUrl}metrics`);
  const refusals: Array<Record<string, string>> = [{}, { authorization: `Bearer ${TOKEN}x` }, { authorization: `Basic ${TOKEN}` }];
  for (const headers of refusals) {
    const refused = await send(t.server.metricsUrl!, { headers });
    assert.equal(refused.status, 401, JSON.stringify(headers));
    assert.ok(!refused.text.includes('resident_'), 'no metric leaks out with the 401');
  }
  const c = client(t);
  await c.get('/inc');
  const m = await scrape(t);
  const expected: Record<string, string> = {
    resident_sessions: 'gauge',
    resident_suspensions_total: 'counter',
    resident_sessions_created_total: 'counter',
    resident_resumes_total: 'counter',
    resident_evictions_total: 'counter',
    resident_sessions_closed_total: 'counter',
    resident_sessions_expired_total: 'counter',
    resident_ip_mismatches_total: 'counter',
    resident_lost_suspends_total: 'counter',
    resident_workers_lost_total: 'counter',
    resident_workers_stalled_total: 'counter',
    resident_workers_crash_loop: 'gauge',
    resident_regenerated_total: 'counter',
    resident_unavailable_total: 'counter',
    resident_request_duration_seconds: 'histogram',
    resident_store_operation_duration_seconds: 'histogram',
    resident_worker_contexts: 'gauge',
    resident_worker_queue_depth: 'gauge',
    resident_store_info: 'gauge',
    // prom-client's process and Node.js metrics, under our prefix.
    resident_process_cpu_seconds_total: 'counter',
    resident_nodejs_heap_size_used_bytes: 'gauge',
  };
  for (const [name, type] of Object.entries(expected)) assert.equal(m.types.get(name), type, name);
  assert.equal(sample(m, 'resident_store_info', { kind: 'memory' }), 1);
  assert.equal(sample(m, 'resident_sessions', { state: 'live' }), 1);
  assert.equal(sample(m, 'resident_sessions_created_total'), 1);
  assert.equal(sample(m, 'resident_workers_crash_loop'), 0);
  // The scrape shows no session ID.
  assert.ok(c.cookie && !m.text.includes(c.cookie));
  // Only GET scrapes under the admin path.
  assert.equal((await send(t.server.metricsUrl!, { method: 'POST', headers: AUTH })).status, 404);
});

test('with metrics.port (0: any free port) a listener of its own serves GET /metrics without a token, and nothing else', async () => {
  const t = await adminServer({ metrics: { port: 0 } });
  const url = t.server.metricsUrl;
  assert.ok(url);
  const { hostname, port, pathname } = new URL(url);
  assert.equal(hostname, '127.0.0.1', 'metrics.host defaults to loopback');
  assert.equal(pathname, '/metrics');
  assert.ok(Number(port) > 0, `a real port, not 0: ${url}`);
  assert.notEqual(Number(port), t.server.port);

  const c = client(t);
  await c.get('/inc');
  const m = await scrape(t);
  assert.equal(sample(m, 'resident_sessions_created_total'), 1);
  assert.equal((await send(`${url}?x=1`)).status, 200);
  assert.equal((await send(url, { method: 'HEAD' })).status, 200);
  for (const path of ['/', '/metrics/', '/other', '/_resident/metrics', '/metricsx']) {
    const reply = await send(`http://127.0.0.1:${port}${path}`);
    assert.equal(reply.status, 404, path);
    assert.ok(!reply.text.includes('resident_'), path);
  }
  assert.equal((await send(url, { method: 'POST' })).status, 404);
  // Not under the admin path any more, token or not; the rest of the admin view is unchanged.
  const onAdmin = await send(`${t.server.adminUrl}metrics`, { headers: AUTH });
  assert.equal(onAdmin.status, 404);
  assert.equal((await send(`${t.server.adminUrl}api/overview`, { headers: AUTH })).status, 200);
  // The main port does not serve /metrics either: the hooks have that path (the fixture: 404).
  assert.equal((await c.get('/metrics')).status, 404);

  // Without an admin token at all the listener still serves; metrics.host is honoured.
  const bare = await server({ metrics: { port: 0, host: '127.0.0.2' } });
  assert.equal(bare.server.adminUrl, null);
  assert.match(bare.server.metricsUrl ?? '', /^http:\/\/127\.0\.0\.2:\d+\/metrics$/);
  const bareM = await scrape(bare);
  assert.equal(sample(bareM, 'resident_sessions', { state: 'live' }), 0);
  assert.equal(await connectTo(Number(new URL(bare.server.metricsUrl!).port), '127.0.0.1'), 'ECONNREFUSED', 'bound to 127.0.0.2 only');
});

test('without an admin token or metrics.port nothing could scrape them, so no metrics are made; requests are served, the admin path belongs to the hooks', async () => {
  const t = await server();
  assert.equal(t.server.metrics, null, 'not collected: nothing could read them');
  assert.equal(t.server.metricsUrl, null);
  assert.equal(t.server.adminUrl, null);
  const c = client(t);
  assert.equal((await fixtureState(c, '/inc')).n, 1);
  assert.equal((await fixtureState(c, '/inc')).n, 2);
  const reply = await c.get('/_resident/metrics', { headers: AUTH });
  assert.equal(reply.status, 200);
  assert.equal(reply.json().hook, 'onConnection');
  assert.equal((await c.get('/metrics')).status, 404, 'the fixture hook has no /metrics');
  assert.equal((await send(`${t.url}/readyz`)).status, 200);
});

test('HEAD on the metrics route and the admin API: the status and headers of GET, without a body', async () => {
  const t = await adminServer();
  await client(t).get('/inc');
  const urls = [t.server.metricsUrl!, `${t.server.adminUrl}api/overview`, `${t.server.adminUrl}api/sessions?state=live`, `${t.server.adminUrl}api/users/ada/sessions`];
  for (const url of urls) {
    const get = await send(url, { headers: AUTH });
    const head = await send(url, { method: 'HEAD', headers: AUTH });
    assert.equal(get.status, 200, `GET ${url}: ${get.text}`);
    assert.equal(head.status, 200, `HEAD ${url}`);
    assert.equal(head.text, '', `HEAD ${url}: no body`);
    for (const name of ['content-type', 'cache-control', 'x-content-type-options']) assert.equal(head.headers[name], get.headers[name], `${url}: ${name}`);
    assert.ok(Number(head.headers['content-length']) > 0, `${url}: the length GET's body would have`);
    const refused = await send(url, { method: 'HEAD' });
    assert.equal(refused.status, 401, `HEAD ${url} without the token`);
    assert.equal(refused.headers['www-authenticate'], 'Bearer realm="resident"');
  }
  // HEAD reads like GET and never acts: an action answers as a GET of it does.
  const action = `${t.server.adminUrl}api/users/ada/close`;
  assert.equal((await send(action, { method: 'HEAD', headers: AUTH })).status, (await send(action, { headers: AUTH })).status);
  assert.equal((await send(`${t.server.adminUrl}api/nope`, { method: 'HEAD', headers: AUTH })).status, 404);
});

// ---------------------------------------------------------------------------------------------
// A metrics listener that cannot listen

/** A real store whose close() is counted (every other call goes straight through). */
function closeCounted(store: ContextStore): { store: ContextStore; closes: () => number } {
  let closes = 0;
  const counted = new Proxy(store, {
    get(target, key) {
      if (key === 'close') return () => (closes++, target.close());
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store: counted, closes: () => closes };
}

/** A loopback listener holding a port, closed after the tests. */
async function occupiedPort(): Promise<number> {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return (holder.address() as { port: number }).port;
}

test('metrics.port in use, equal to port, or on a host not of this machine: startServer fails with RESIDENT_ERR_LISTEN naming metrics.port, and leaves nothing open', async () => {
  const busy = await occupiedPort();
  const cases: Array<{ what: string; metrics: (port: number) => ResidentConfigInput['metrics'] }> = [
    { what: 'a port in use', metrics: () => ({ port: busy }) },
    { what: 'the main port', metrics: (port) => ({ port }) },
    { what: 'a host not of this machine', metrics: () => ({ port: 0, host: '192.0.2.1' }) },
  ];
  for (const { what, metrics } of cases) {
    const port = await freePort();
    const { store, closes } = closeCounted(new MemoryStore());
    await assert.rejects(
      startTestServer({ port, workers: { threads: 1 }, metrics: metrics(port) }, undefined, store),
      (error: Error) => {
        assert.ok(isResidentError(error, 'RESIDENT_ERR_LISTEN'), `${what}: ${error.stack}`);
        assert.match(error.message, /\bmetrics\.port\b/, what);
        return true;
      },
    );
    assert.equal(await connectTo(port), 'ECONNREFUSED', `${what}: the main port was closed again`);
    assert.equal(closes(), 1, `${what}: the store was closed`);
  }
  assert.equal(await connectTo(busy), 'connected', 'the other listener is untouched');
});

test('npm start with metrics.port equal to port or in use: exit 2, a message naming metrics.port, nothing listening', { timeout: 60_000 }, async () => {
  const busy = await occupiedPort();
  for (const same of [true, false]) {
    const port = await freePort();
    const config = {
      host: '127.0.0.1',
      port,
      publicDir: join(ROOT, 'test/fixtures/public'),
      workers: { threads: 1 },
      hooks: FIXTURE_HOOKS,
      store: { kind: 'memory' },
      metrics: { port: same ? port : busy },
    };
    const child = runMain(['--config', writeTempConfig(config)]);
    const code = await Promise.race([child.exited, new Promise<string>((resolve) => setTimeout(() => resolve('no exit'), 20_000))]);
    if (code === 'no exit') child.process.kill('SIGKILL');
    assert.equal(code, 2, describeChild(child));
    assert.match(child.stderr(), same ? /metrics\.port \d+ \(the same as port\)/ : /metrics\.port \d+ at 127\.0\.0\.1: .*EADDRINUSE/, describeChild(child));
    assert.equal(childLogs(child).find((line) => line.event === 'started'), undefined);
    assert.equal(await connectTo(port), 'ECONNREFUSED');
  }
});

test('metrics.enabled false: no metrics route under the admin path and no listener', async () => {
  const t = await adminServer({ metrics: { enabled: false } });
  assert.equal(t.server.metrics, null);
  assert.equal(t.server.metricsUrl, null);
  const reply = await send(`${t.server.adminUrl}metrics`, { headers: AUTH });
  assert.equal(reply.status, 404);
  assert.ok(!reply.text.includes('resident_'));
  assert.equal((await send(`${t.server.adminUrl}api/overview`, { headers: AUTH })).status, 200, 'the admin view itself is on');

  const port = await freePort();
  const off = await adminServer({ metrics: { enabled: false, port } });
  assert.equal(off.server.metricsUrl, null);
  assert.equal(await connectTo(port), 'ECONNREFUSED', 'nothing listens on metrics.port');
  // Requests are served as usual with nothing observing them.
  const c = client(off);
  assert.equal((await fixtureState(c, '/inc')).n, 1);

  // The same port with metrics on: something listens there.
  const on = await adminServer({ metrics: { port } });
  assert.equal(on.server.metricsUrl, `http://127.0.0.1:${port}/metrics`);
  assert.equal(await connectTo(port), 'connected');
});

// ---------------------------------------------------------------------------------------------
// Metrics move with real events

test('sessions, idle suspension and resume: gauges and counters follow', async () => {
  const clock = new ManualClock();
  const t = await adminServer({ workers: { threads: 2 }, sessions: { processTimeout: '10m', cookieTimeout: '1h' } }, clock);
  const start = await scrape(t);
  assert.equal(sample(start, 'resident_sessions', { state: 'live' }), 0);
  assert.equal(sample(start, 'resident_sessions', { state: 'suspended' }), 0);
  assert.equal(sample(start, 'resident_sessions_created_total'), 0);
  assert.equal(sample(start, 'resident_suspensions_total', { reason: 'idle' }), 0);
  assert.equal(sample(start, 'resident_resumes_total'), 0);
  const workers = t.server.pool.threadIds;
  assert.equal(workers.length, 2);
  for (const id of workers) {
    assert.equal(sample(start, 'resident_worker_contexts', { worker: String(id) }), 0);
    assert.equal(sample(start, 'resident_worker_queue_depth', { worker: String(id) }), 0);
  }

  const made = [client(t), client(t), client(t)];
  const homes: number[] = [];
  for (const c of made) homes.push((await fixtureState(c, '/inc')).threadId);
  const live = await scrape(t);
  assert.equal(sample(live, 'resident_sessions', { state: 'live' }), 3);
  assert.equal(sample(live, 'resident_sessions_created_total'), 3);
  for (const id of workers) {
    assert.equal(sample(live, 'resident_worker_contexts', { worker: String(id) }), homes.filter((home) => home === id).length, `contexts on ${id}`);
  }

  // Ten minutes idle on the server's clock: the sweep suspends all three.
  clock.advance(10 * MIN + 1000);
  const idle = await scrapeUntil(t, (m) => sample(m, 'resident_sessions', { state: 'suspended' }) === 3, 'three idle suspends');
  assert.equal(sample(idle, 'resident_sessions', { state: 'live' }), 0);
  assert.equal(sample(idle, 'resident_suspensions_total', { reason: 'idle' }), 3);
  assert.equal(sample(idle, 'resident_suspensions_total', { reason: 'evicted' }), 0);
  assert.equal(total(idle, 'resident_worker_contexts'), 0);

  // One comes back: resumed, live again.
  const back = await fixtureState(made[0]!);
  assert.equal(back.resumed, true);
  const resumed = await scrape(t);
  assert.equal(sample(resumed, 'resident_resumes_total'), 1);
  assert.equal(sample(resumed, 'resident_sessions', { state: 'live' }), 1);
  assert.equal(sample(resumed, 'resident_sessions', { state: 'suspended' }), 2);
  assert.equal(sample(resumed, 'resident_sessions_created_total'), 3, 'a resume is not a creation');
  assert.equal(total(resumed, 'resident_worker_contexts'), 1);

  // Closed by its hook.
  await made[0]!.get('/close');
  const closed = await scrape(t);
  assert.equal(sample(closed, 'resident_sessions_closed_total'), 1);
  assert.equal(sample(closed, 'resident_suspensions_total', { reason: 'closed' }), 1);
  assert.equal(sample(closed, 'resident_sessions', { state: 'live' }), 0);

  // The cookie runs out for the other two (1 h after their last request).
  clock.advance(60 * MIN);
  const expired = await scrapeUntil(t, (m) => sample(m, 'resident_sessions_expired_total') === 2, 'two expiries');
  assert.equal(sample(expired, 'resident_sessions', { state: 'suspended' }), 0);
});

test('the request histogram counts dynamic requests by status class, and nothing else', async () => {
  const t = await adminServer();
  const c = client(t);
  const before = await scrape(t);
  assert.equal(total(before, `${REQUESTS}_count`), 0);

  for (let i = 0; i < 5; i++) assert.equal((await c.get('/inc')).status, 200);
  assert.equal((await c.get('/no-such-path')).status, 404); // the hook answered nothing
  assert.equal((await c.get('/boom')).status, 500); // the hook threw
  assert.equal((await c.get('/status?code=302')).status, 302);
  // Not dynamic: a static file, health probes, the admin view and its API, metrics scrapes.
  assert.equal((await send(`${t.url}/style.css`)).status, 200);
  assert.equal((await send(`${t.url}/healthz`)).status, 200);
  assert.equal((await send(t.server.adminUrl!)).status, 200);
  assert.equal((await send(`${t.server.adminUrl}api/overview`, { headers: AUTH })).status, 200);
  assert.equal((await send(`${t.server.adminUrl}api/overview`)).status, 401);
  await scrape(t);

  const m = await scrape(t);
  assert.equal(sample(m, `${REQUESTS}_count`, { status: '2xx' }), 5);
  assert.equal(sample(m, `${REQUESTS}_count`, { status: '3xx' }), 1);
  assert.equal(sample(m, `${REQUESTS}_count`, { status: '4xx' }), 1);
  assert.equal(sample(m, `${REQUESTS}_count`, { status: '5xx' }), 1);
  assert.equal(total(m, `${REQUESTS}_count`), 8);
  // A well-formed histogram: cumulative buckets ending at +Inf = count, and a positive sum.
  for (const status of ['2xx', '3xx', '4xx', '5xx']) {
    const buckets = matching(m, `${REQUESTS}_bucket`, { status }).map((s) => ({ le: Number(s.labels.le === '+Inf' ? Infinity : s.labels.le), value: s.value }));
    assert.ok(buckets.length > 5, status);
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(buckets[i]!.le > buckets[i - 1]!.le, `${status}: buckets in order`);
      assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${status}: cumulative`);
    }
    assert.equal(buckets.at(-1)!.le, Infinity);
    assert.equal(buckets.at(-1)!.value, sample(m, `${REQUESTS}_count`, { status }));
    assert.ok((sample(m, `${REQUESTS}_sum`, { status }) ?? 0) > 0, `${status}: sum`);
  }

  // A slow request lands above the 0.25 s bucket (and within 10 s).
  const bucket = (e: Exposition, le: string) => sample(e, `${REQUESTS}_bucket`, { status: '2xx', le }) ?? 0;
  await c.get('/sleep?ms=300');
  const slow = await scrape(t);
  assert.equal(sample(slow, `${REQUESTS}_count`, { status: '2xx' }), 6);
  assert.equal(bucket(slow, '0.25'), bucket(m, '0.25'), 'the 300 ms request is not in the 0.25 s bucket');
  assert.equal(bucket(slow, '10'), bucket(m, '10') + 1, 'it is in the 10 s bucket');
});

test('the cap: a second client with maxContexts 1 evicts the first', async () => {
  const t = await adminServer({ sessions: { maxContexts: 1 } });
  const a = client(t);
  const b = client(t);
  await fixtureState(a, '/inc');
  const one = await scrape(t);
  assert.equal(sample(one, 'resident_evictions_total'), 0);
  await fixtureState(b, '/inc');
  const evicted = await scrapeUntil(t, (m) => sample(m, 'resident_evictions_total') === 1, 'the eviction');
  assert.equal(sample(evicted, 'resident_suspensions_total', { reason: 'evicted' }), 1);
  assert.equal(sample(evicted, 'resident_sessions', { state: 'live' }), 1);
  assert.equal(sample(evicted, 'resident_sessions', { state: 'suspended' }), 1);
  // A comes back and evicts B in turn.
  assert.equal((await fixtureState(a)).resumed, true);
  const again = await scrapeUntil(t, (m) => sample(m, 'resident_evictions_total') === 2, 'the second eviction');
  assert.equal(sample(again, 'resident_resumes_total'), 1);
});

test('checkpoints: counted under reason "checkpoint", one per context that handled a request, and not as suspensions of another reason', async () => {
  const t = await adminServer({ sessions: { checkpointInterval: '100ms' } });
  const a = client(t);
  await fixtureState(a, '/inc');
  const saved = await scrapeUntil(t, (m) => sample(m, 'resident_suspensions_total', { reason: 'checkpoint' }) === 1, 'the checkpoint');
  assert.equal(sample(saved, 'resident_suspensions_total', { reason: 'idle' }), 0);
  assert.equal(sample(saved, 'resident_sessions', { state: 'live' }), 1, 'the context stays live');
  await fixtureState(a, '/inc');
  await scrapeUntil(t, (m) => sample(m, 'resident_suspensions_total', { reason: 'checkpoint' }) === 2, 'the checkpoint after the next request');
});

test('a cookie from another IP: ip_mismatches_total, and a 4xx request', async () => {
  const t = await adminServer();
  const home = client(t, { localAddress: '127.0.0.1' });
  assert.equal((await fixtureState(home, '/inc')).clientIp, '127.0.0.1');
  const elsewhere = client(t, { localAddress: '127.0.0.2' });
  elsewhere.cookie = home.cookie;
  const before = await scrape(t);
  assert.equal(sample(before, 'resident_ip_mismatches_total'), 0);

  const refused = await elsewhere.get('/inc');
  assert.equal(refused.status, 400);
  assert.equal(refused.setCookies.length, 1, 'the 400 expires the cookie for its sender only (B1)');
  assert.match(refused.setCookies[0]!, /^RSID=;.*Max-Age=0/i);
  const m = await scrape(t);
  assert.equal(sample(m, 'resident_ip_mismatches_total'), 1);
  assert.equal(sample(m, `${REQUESTS}_count`, { status: '4xx' }), 1);
  assert.equal(sample(m, 'resident_sessions_created_total'), 1, 'no session for the foreign request');
  // The 400 expired the cookie for that sender: present it again, as a thief would.
  elsewhere.cookie = home.cookie;
  await elsewhere.get('/inc');
  assert.equal(sample(await scrape(t), 'resident_ip_mismatches_total'), 2);
  // The session itself was untouched.
  assert.equal((await fixtureState(home)).n, 1);
});

test('503s are counted by error code: a full queue, capacity, and a hook of its own', async () => {
  const t = await adminServer({ sessions: { maxQueuedRequests: 1, maxContexts: 1 } });
  const busy = client(t);
  await fixtureState(busy, '/inc');
  const start = await scrape(t);
  assert.equal(total(start, 'resident_unavailable_total'), 0);

  const slow = busy.get('/sleep?ms=1500');
  await waitFor(async () => ((await t.server.sessions.info(busy.cookie!))?.inFlight ?? 0) > 0, 2000, 'the slow request in flight');
  // The same session again: its queue (1) is full.
  const queued = await busy.get('/state');
  assert.equal(queued.status, 503);
  assert.equal(queued.headers['retry-after'], '1');
  // Another client while the only context is busy: no room.
  const other = client(t);
  const capacity = await other.get('/state');
  assert.equal(capacity.status, 503);
  assert.equal((await slow).status, 200);

  const m = await scrape(t);
  assert.equal(sample(m, 'resident_unavailable_total', { code: 'RESIDENT_ERR_QUEUE_FULL' }), 1);
  assert.equal(sample(m, 'resident_unavailable_total', { code: 'RESIDENT_ERR_CAPACITY' }), 1);
  assert.equal(sample(m, `${REQUESTS}_count`, { status: '5xx' }), 2);

  // A 503 the hook answers itself is counted as "hook".
  assert.equal((await busy.get('/status?code=503')).status, 503);
  const hook = await scrape(t);
  assert.equal(sample(hook, 'resident_unavailable_total', { code: 'hook' }), 1);
  assert.equal(total(hook, 'resident_unavailable_total'), 3);
  // Other 5xx are not "unavailable".
  assert.equal((await busy.get('/boom')).status, 500);
  assert.equal(total(await scrape(t), 'resident_unavailable_total'), 3);
});

test('worker queue depth shows requests in flight on their worker', async () => {
  const t = await adminServer({ workers: { threads: 2 } });
  const c = client(t);
  const home = String((await fixtureState(c)).threadId);
  const slow = c.get('/sleep?ms=1000');
  const busy = await scrapeUntil(t, (m) => (sample(m, 'resident_worker_queue_depth', { worker: home }) ?? 0) >= 1, 'a queued task on the home worker', 900);
  assert.equal(sample(busy, 'resident_worker_contexts', { worker: home }), 1);
  assert.equal((await slow).status, 200);
  const idle = await scrape(t);
  assert.equal(total(idle, 'resident_worker_queue_depth'), 0);
});

test('store operations (sqlite): set on suspend, get on resume, delete on close, by outcome', async () => {
  const clock = new ManualClock();
  const dir = tempDir();
  const t = await adminServer({ store: { kind: 'sqlite', path: join(dir, 'contexts.db') }, sessions: { processTimeout: '10m', cookieTimeout: '1h' } }, clock);
  const c = client(t);
  await fixtureState(c, '/inc');
  const before = await scrape(t);
  assert.equal(sample(before, 'resident_store_info', { kind: 'sqlite' }), 1);
  const count = (m: Exposition, operation: string, outcome = 'ok') => sample(m, `${STORE_OPS}_count`, { operation, outcome }) ?? 0;
  // A live context's requests never touch the store.
  assert.equal(count(before, 'set'), 0);
  assert.equal(count(before, 'get'), 0);

  clock.advance(10 * MIN + 1000);
  const suspended = await scrapeUntil(t, (m) => count(m, 'set') === 1, 'the suspend to write the memento');
  assert.equal(count(suspended, 'get'), 0);
  assert.ok((sample(suspended, `${STORE_OPS}_sum`, { operation: 'set', outcome: 'ok' }) ?? -1) >= 0);

  assert.equal((await fixtureState(c)).resumed, true);
  const resumed = await scrape(t);
  assert.equal(count(resumed, 'get'), 1, 'the resume read the memento once');
  assert.equal(count(resumed, 'set'), 1);

  await c.get('/close');
  const closed = await scrapeUntil(t, (m) => count(m, 'delete') >= 1, 'the close to delete the record');
  assert.equal(count(closed, 'set'), 1);
  for (const operation of ['get', 'set', 'delete']) assert.equal(count(closed, operation, 'error'), 0, operation);
});

test('store operations (file store whose folder vanished): failed writes are counted as errors', async () => {
  const clock = new ManualClock();
  const dir = tempDir();
  const folder = join(dir, 'contexts');
  const t = await adminServer({ store: { kind: 'file', path: folder }, sessions: { processTimeout: '10m', cookieTimeout: '1h' } }, clock);
  const c = client(t);
  await fixtureState(c, '/inc');
  rmSync(folder, { recursive: true, force: true });

  clock.advance(10 * MIN + 1000);
  const failed = await scrapeUntil(
    t,
    (m) => (sample(m, `${STORE_OPS}_count`, { operation: 'set', outcome: 'error' }) ?? 0) >= 1,
    'a failed store write',
  );
  assert.equal(sample(failed, `${STORE_OPS}_count`, { operation: 'set', outcome: 'ok' }), undefined);
  assert.ok((sample(failed, 'resident_suspensions_total', { reason: 'failed' }) ?? 0) >= 1);
  assert.equal(sample(failed, 'resident_suspensions_total', { reason: 'idle' }), 0);
  // The context stayed live: nothing was lost.
  assert.equal(sample(failed, 'resident_sessions', { state: 'live' }), 1);
  const state = await fixtureState(c);
  assert.equal(state.isNew, false);
  assert.equal(state.n, 1);
});

test('a conditional store write that is refused (owner or fence do not match) is counted as refused, not ok', async () => {
  const metrics = new Metrics();
  try {
    const store = metrics.instrument(new MemoryStore());
    const written = record({ id: 'A'.repeat(22) });
    assert.equal(await store.setIf(written, null), true);
    assert.equal(await store.setIf({ ...written, memento: '"late"' }, null), false, 'a record is there: "from nothing" is refused');
    assert.equal(await store.deleteIf(written.id, { owner: 'node-b', fence: 3 }), false);
    const m = parseExposition(await metrics.text());
    const count = (operation: string, outcome: string) =>
      m.samples.find((sample) => sample.name === 'resident_store_operation_duration_seconds_count' && sample.labels.operation === operation && sample.labels.outcome === outcome)?.value ?? 0;
    assert.deepEqual([count('setIf', 'ok'), count('setIf', 'refused'), count('deleteIf', 'refused'), count('deleteIf', 'ok')], [1, 1, 1, 0]);
  } finally {
    metrics.close();
  }
});
