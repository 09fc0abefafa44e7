/**
 * /healthz and /readyz through a real server over real sockets: what they answer, that they
 * never create or touch a session nor reach the hooks, readiness when the store or a worker
 * thread is down or the server is stopping, that probes never ping the store themselves (one
 * background ping at a time, however many probes come), and `health.enabled: false`.
 * Store outages during live traffic (E7) are in test/stores/outage.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FileStore } from '../src/stores/file.ts';
import { SqliteStore } from '../src/stores/sqlite.ts';
import type { ContextStore } from '../src/stores/store.ts';
import { Client, ManualClock, ROOT, send, startTestServer, waitFor, type Reply, type TestServer } from './helpers.ts';
import { parkThreadPool as parkThreadsOfPool } from './park-threadpool.ts';

const OPS_HOOK = join(ROOT, 'test/fixtures/ops/onConnection.ts');
const TEST = { timeout: 30_000 };

const servers: TestServer[] = [];
const clients: Client[] = [];
const tempDirs: string[] = [];
const releases: Array<() => Promise<void>> = [];

after(async () => {
  for (const release of releases.splice(0)) await release();
  await Promise.all(clients.map((c) => c.close()));
  for (const server of servers) await server.close();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

async function serverWith(overrides: Parameters<typeof startTestServer>[0] = {}, clock?: ManualClock): Promise<TestServer> {
  const server = await startTestServer(overrides, clock);
  servers.push(server);
  return server;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-health-'));
  tempDirs.push(dir);
  return dir;
}

function client(url: string): Client {
  const c = new Client(url);
  clients.push(c);
  return c;
}

interface Readiness {
  status: string;
  workers: { up: number; expected: number };
  store: { kind: string; status: string };
}

/** A probe's answer: JSON, never cached, no cookie. */
function probeBody<T>(reply: Reply): T {
  assert.match(String(reply.headers['content-type']), /^application\/json/);
  assert.equal(reply.headers['cache-control'], 'no-store');
  assert.deepEqual(reply.setCookies, [], 'a probe never sets a cookie');
  return reply.json<T>();
}

async function timedSend(url: string, init?: Parameters<typeof send>[1]): Promise<{ reply: Reply; ms: number }> {
  const started = Date.now();
  const reply = await send(url, init);
  return { reply, ms: Date.now() - started };
}

/** How the server used a store: ping calls, and the most ever under way at once. */
interface PingCount {
  calls: number;
  pending: number;
  mostPending: number;
}

/** A real store, passed through unchanged, with its pings counted. */
function countingPings(store: ContextStore): { store: ContextStore; pings: PingCount } {
  const pings: PingCount = { calls: 0, pending: 0, mostPending: 0 };
  const counted: ContextStore = {
    kind: store.kind,
    get: (id) => store.get(id),
    existing: (ids) => store.existing(ids),
    set: (record) => store.set(record),
    delete: (id) => store.delete(id),
    setIf: (record, expected) => store.setIf(record, expected),
    deleteIf: (id, expected) => store.deleteIf(id, expected),
    expiredIds: (now, limit) => store.expiredIds(now, limit),
    list: (query) => store.list(query),
    quarantine: (id, reason) => store.quarantine(id, reason),
    close: () => store.close(),
    async ping() {
      pings.calls++;
      pings.mostPending = Math.max(pings.mostPending, ++pings.pending);
      try {
        await store.ping();
      } finally {
        pings.pending--;
      }
    },
  };
  return { store: counted, pings };
}

async function serverOn(store: ContextStore, overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const server = await startTestServer(overrides, undefined, store);
  servers.push(server);
  return server;
}

/** Probes until /readyz answers `status`; each probe must answer at once (it never waits on the store). */
async function readyzUntil(url: string, status: number, timeoutMs: number): Promise<Readiness> {
  const body = await waitFor(
    async () => {
      const { reply, ms } = await timedSend(`${url}/readyz`);
      assert.ok(ms < 500, `/readyz answered after ${ms} ms`);
      return reply.status === status ? probeBody<Readiness>(reply) : undefined;
    },
    timeoutMs,
    `/readyz ${status}`,
  );
  return body!;
}

async function parkThreadPool(): Promise<() => Promise<void>> {
  const release = await parkThreadsOfPool();
  releases.push(release);
  return release;
}

describe('the probes on a healthy server', () => {
  test('GET /healthz: 200 {"status":"ok"}; GET /readyz: 200 ready, both workers up, the store ok; no session, no cookie', TEST, async () => {
    const t = await serverWith({ workers: { threads: 2 } });
    const health = await send(`${t.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(probeBody(health), { status: 'ok' });
    assert.equal(health.text, '{"status":"ok"}');

    const ready = await send(`${t.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(probeBody<Readiness>(ready), { status: 'ready', workers: { up: 2, expected: 2 }, store: { kind: 'memory', status: 'ok' } });

    // A query string does not make it a hook request; HEAD answers without a body.
    assert.equal((await send(`${t.url}/healthz?probe=1`)).status, 200);
    const head = await send(`${t.url}/readyz`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.text, '');

    const { sessions } = t.server;
    assert.equal(sessions.stats.created, 0, 'no session created');
    assert.equal(sessions.stats.live + sessions.stats.suspending + sessions.stats.suspendedKnown, 0);
    assert.deepEqual(t.logs.filter((line) => line.event === 'created'), []);
  });

  test('with a session cookie: the probes neither touch the session (no activity, no request counted) nor answer with a cookie', TEST, async () => {
    const clock = new ManualClock();
    const t = await serverWith({ workers: { threads: 1 } }, clock);
    const owner = client(t.url);
    const first = await owner.get('/inc');
    assert.equal(first.status, 200);
    const id = owner.cookie!;
    const entry = (await t.server.sessions.info(id));
    assert.ok(entry && entry.idleMs !== null);
    const { idleMs, requests } = entry;
    clock.advance(60_000);
    for (const path of ['/healthz', '/readyz']) {
      const reply = await owner.get(path);
      assert.equal(reply.status, 200, path);
      probeBody(reply);
    }
    assert.equal((await t.server.sessions.info(id))?.idleMs, idleMs + 60_000, 'no activity refresh');
    assert.equal((await t.server.sessions.info(id))?.requests, requests, 'the sessions layer never saw the probes');
    assert.equal(t.server.sessions.stats.created, 1);
    assert.equal((await owner.get('/inc')).json().n, 2, 'the hook ran for /inc only');
  });

  test('the store kind is reported for the file and the SQLite store', TEST, async () => {
    const dir = tempDir();
    for (const store of [{ kind: 'file' as const, path: join(dir, 'contexts') }, { kind: 'sqlite' as const, path: join(dir, 'contexts.db') }]) {
      const t = await serverWith({ workers: { threads: 1 }, store });
      const ready = await send(`${t.url}/readyz`);
      assert.equal(ready.status, 200, ready.text);
      assert.deepEqual(probeBody<Readiness>(ready).store, { kind: store.kind, status: 'ok' });
      await t.close();
    }
  });
});

describe('readiness when something is down', () => {
  test('file store folder removed: /readyz 503 "not ready", store unreachable, logged once; ready again once the folder is back', TEST, async () => {
    const path = join(tempDir(), 'contexts');
    const t = await serverWith({ workers: { threads: 1 }, store: { kind: 'file', path } });
    assert.equal((await send(`${t.url}/readyz`)).status, 200);

    rmSync(path, { recursive: true, force: true });
    // The next background ping (within about a second) finds the folder gone.
    await readyzUntil(t.url, 503, 3000);
    for (let i = 0; i < 2; i++) {
      const { reply, ms } = await timedSend(`${t.url}/readyz`);
      assert.equal(reply.status, 503, reply.text);
      assert.deepEqual(probeBody<Readiness>(reply), {
        status: 'not ready',
        workers: { up: 1, expected: 1 },
        store: { kind: 'file', status: 'unreachable' },
      });
      assert.ok(ms < 500, `answered in ${ms} ms`);
      assert.doesNotMatch(reply.text, /ENOENT|\/tmp|contexts/, 'the reason goes to the log, not to the client');
    }
    assert.equal((await send(`${t.url}/healthz`)).status, 200, 'liveness is not readiness');
    const logged = t.logs.filter((line) => line.event === 'store-unreachable');
    assert.ok(logged.length >= 1, 'the reason is logged');
    assert.equal(logged[0]!.level, 50);
    assert.match(String((logged[0]!.err as { message?: string }).message), /ENOENT/);

    mkdirSync(path);
    assert.equal((await readyzUntil(t.url, 200, 3000)).status, 'ready');
    assert.equal(t.logs.filter((line) => line.event === 'store-reachable').length, 1, 'the recovery is logged');
  });

  test(
    'file store folder removed: one error line per outage, not one per failed ping or probe',
    TEST,
    async () => {
      const path = join(tempDir(), 'contexts');
      const { store, pings } = countingPings(await FileStore.open({ dir: path }));
      const t = await serverOn(store, { workers: { threads: 1 } });
      rmSync(path, { recursive: true, force: true });
      await readyzUntil(t.url, 503, 3000);
      const failing = pings.calls;
      await waitFor(async () => pings.calls >= failing + 2, 4000, 'two more failed pings');
      for (let i = 0; i < 3; i++) assert.equal((await send(`${t.url}/readyz`)).status, 503);
      const messages = t.logs.filter((line) => line.event === 'store-unreachable').map((line) => (line.err as { message?: string }).message);
      assert.equal(messages.length, 1, JSON.stringify(messages, null, 1));
    },
  );

  test('a store that does not answer: /readyz turns 503 within about 2 s and answers at once meanwhile; one ping pending, never a pile; ready again after', TEST, async () => {
    const dir = join(tempDir(), 'contexts');
    const { store, pings } = countingPings(await FileStore.open({ dir }));
    const t = await serverOn(store, { workers: { threads: 1 } });
    assert.equal((await send(`${t.url}/readyz`)).status, 200);

    const release = await parkThreadPool();
    try {
      // At most a second until the next ping, then a second until it is given up on.
      const down = await readyzUntil(t.url, 503, 3500);
      assert.deepEqual(down.store, { kind: 'file', status: 'unreachable' });
      const health = await timedSend(`${t.url}/healthz`);
      assert.equal(health.reply.status, 200);
      assert.ok(health.ms < 500, `/healthz answered after ${health.ms} ms`);
      const line = t.logs.find((l) => l.event === 'store-unreachable');
      assert.match(String((line?.err as { message?: string } | undefined)?.message), /within 1000 ms/);
      // Probes keep coming while the store hangs: still 503, and the hung ping is the only one.
      const stuckAt = pings.calls;
      const until = Date.now() + 1500;
      while (Date.now() < until) assert.equal((await timedSend(`${t.url}/readyz`)).reply.status, 503);
      assert.equal(pings.calls, stuckAt, 'no new ping while one hangs');
      assert.equal(pings.mostPending, 1);
    } finally {
      // The parked threads must go back whatever failed, or every later test waits on them.
      await release();
    }
    assert.equal((await readyzUntil(t.url, 200, 3000)).status, 'ready');
    assert.equal(pings.mostPending, 1, 'never two pings at once');
    // The late ping finished and cleaned up after itself.
    await waitFor(async () => readdirSync(dir).every((name) => !name.startsWith('.tmp-')), 2000, 'no probe file left');
  });

  test('many probes at once ping the store no more than once a second, one ping at a time; the pings stop at shutdown', TEST, async () => {
    const { store, pings } = countingPings(new SqliteStore({ path: join(tempDir(), 'contexts.db'), synchronous: 'normal' }));
    const t = await serverOn(store, { workers: { threads: 1 } });
    const started = Date.now();
    const before = pings.calls;
    let probes = 0;
    for (let round = 0; round < 5; round++) {
      const replies = await Promise.all(Array.from({ length: 100 }, () => send(`${t.url}/readyz`)));
      probes += replies.length;
      for (const reply of replies) assert.equal(reply.status, 200, reply.text);
    }
    const seconds = (Date.now() - started) / 1000;
    const during = pings.calls - before;
    assert.ok(during <= Math.ceil(seconds) + 1, `${during} pings for ${probes} probes in ${seconds.toFixed(1)} s`);
    assert.equal(pings.mostPending, 1);

    // The background pings go on without probes, about once a second...
    const idle = pings.calls;
    await waitFor(async () => pings.calls >= idle + 2, 4000, 'two more background pings');
    // ...and stop with the server.
    await t.close();
    const stopped = pings.calls;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(pings.calls, stopped, 'no ping after shutdown');
  });

  test('a worker thread dies: /readyz 503 with up < expected until piscina has replaced it', TEST, async () => {
    const t = await serverWith({ workers: { threads: 2 } });
    const died = await send(`${t.url}/die`);
    assert.equal(died.status, 502);
    const down = await waitFor(
      async () => {
        const reply = await send(`${t.url}/readyz`);
        return reply.status === 503 ? probeBody<Readiness>(reply) : undefined;
      },
      2000,
      'a 503 while a thread is missing',
    );
    assert.deepEqual(down, { status: 'not ready', workers: { up: 1, expected: 2 }, store: { kind: 'memory', status: 'ok' } });
    const up = await waitFor(
      async () => {
        const reply = await send(`${t.url}/readyz`);
        return reply.status === 200 ? probeBody<Readiness>(reply) : undefined;
      },
      10_000,
      'the replacement thread',
    );
    assert.deepEqual(up?.workers, { up: 2, expected: 2 });
  });

  test('while shutting down: a probe on an open connection gets 503 "stopping"; /healthz still 200', TEST, async () => {
    const t = await serverWith({ workers: { threads: 1 } });
    // A keep-alive connection busy with a slow request stays open through the start of the
    // shutdown; new connections are refused by then.
    const socket = connect(t.server.port, '127.0.0.1');
    let raw = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (raw += chunk));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /sleep?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(async () => t.server.sessions.stats.live === 1, 2000, 'the slow request under way');
    const stopping = t.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await stopping;
    await closed;
    const statuses = [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 503, 200], raw);
    assert.match(raw, /\{"status":"stopping","workers":\{"up":1,"expected":1\},"store":\{"kind":"memory","status":"ok"\}\}/);
    assert.match(raw, /\{"status":"ok"\}/);
  });
});

describe('health.enabled false', () => {
  test('/healthz and /readyz go to the hooks like any other path: a session, a cookie, the hook’s answer', TEST, async () => {
    const t = await serverWith({ workers: { threads: 1 }, health: { enabled: false }, hooks: { onConnection: OPS_HOOK } });
    const c = client(t.url);
    const health = await c.get('/healthz');
    assert.equal(health.status, 200);
    assert.equal(health.text, 'hook saw /healthz (1)');
    assert.equal(health.setCookies.length, 1);
    const ready = await c.get('/readyz');
    assert.equal(ready.text, 'hook saw /readyz (2)', 'in the same session');
    assert.equal(t.server.sessions.stats.created, 1);

    // And the ops hook leaves the probes to the server when health is on.
    const on = await serverWith({ workers: { threads: 1 }, hooks: { onConnection: OPS_HOOK } });
    const probe = await send(`${on.url}/healthz`);
    assert.deepEqual(probeBody(probe), { status: 'ok' });
    assert.equal(on.server.sessions.stats.created, 0);
  });
});
