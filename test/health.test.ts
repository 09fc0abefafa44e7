/**
 * /healthz and /readyz through a real server over real sockets: what they answer, that they
 * never create or touch a session nor reach the hooks, readiness when the store or a worker
 * thread is down or the server is stopping, and `health.enabled: false`.
 * Store outages during live traffic (E7) are in test/stores/outage.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
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
    assert.equal(sessions.counters.created, 0, 'no session created');
    assert.equal(sessions.directory.live.size + sessions.directory.suspended.size, 0);
    assert.deepEqual(t.logs.filter((line) => line.event === 'created'), []);
  });

  test('with a session cookie: the probes neither touch the session (no activity, no request counted) nor answer with a cookie', TEST, async () => {
    const clock = new ManualClock();
    const t = await serverWith({ workers: { threads: 1 } }, clock);
    const owner = client(t.url);
    const first = await owner.get('/inc');
    assert.equal(first.status, 200);
    const id = owner.cookie!;
    const entry = t.server.sessions.directory.get(id);
    assert.ok(entry);
    const { lastActive, requests } = entry;
    clock.advance(60_000);
    for (const path of ['/healthz', '/readyz']) {
      const reply = await owner.get(path);
      assert.equal(reply.status, 200, path);
      probeBody(reply);
    }
    assert.equal(entry.lastActive, lastActive, 'no activity refresh');
    assert.equal(entry.requests, requests, 'the sessions layer never saw the probes');
    assert.equal(t.server.sessions.counters.created, 1);
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
    for (let i = 0; i < 2; i++) {
      const { reply, ms } = await timedSend(`${t.url}/readyz`);
      assert.equal(reply.status, 503, reply.text);
      assert.deepEqual(probeBody<Readiness>(reply), {
        status: 'not ready',
        workers: { up: 1, expected: 1 },
        store: { kind: 'file', status: 'unreachable' },
      });
      assert.ok(ms < 1500, `answered in ${ms} ms`);
      assert.doesNotMatch(reply.text, /ENOENT|\/tmp|contexts/, 'the reason goes to the log, not to the client');
    }
    assert.equal((await send(`${t.url}/healthz`)).status, 200, 'liveness is not readiness');
    const logged = t.logs.filter((line) => line.event === 'store-unreachable');
    assert.ok(logged.length >= 1, 'the reason is logged');
    assert.equal(logged[0]!.level, 50);
    assert.match(String((logged[0]!.err as { message?: string }).message), /ENOENT/);

    mkdirSync(path);
    const back = await send(`${t.url}/readyz`);
    assert.equal(back.status, 200, back.text);
    assert.equal(probeBody<Readiness>(back).status, 'ready');
  });

  test(
    'file store folder removed: one error line per outage, not one per probe',
    TEST,
    async () => {
      const path = join(tempDir(), 'contexts');
      const t = await serverWith({ workers: { threads: 1 }, store: { kind: 'file', path } });
      rmSync(path, { recursive: true, force: true });
      for (let i = 0; i < 3; i++) assert.equal((await send(`${t.url}/readyz`)).status, 503);
      const messages = t.logs.filter((line) => line.event === 'store-unreachable').map((line) => (line.err as { message?: string }).message);
      assert.equal(messages.length, 1, JSON.stringify(messages, null, 1));
    },
  );

  test('a store that does not answer: /readyz gives up after 1 s with 503 while /healthz answers at once; ready again after', TEST, async () => {
    const path = join(tempDir(), 'contexts');
    const t = await serverWith({ workers: { threads: 1 }, store: { kind: 'file', path } });
    assert.equal((await send(`${t.url}/readyz`)).status, 200);

    const release = await parkThreadPool();
    try {
      const [ready, health] = await Promise.all([timedSend(`${t.url}/readyz`), timedSend(`${t.url}/healthz`)]);
      assert.equal(ready.reply.status, 503, ready.reply.text);
      assert.deepEqual(probeBody<Readiness>(ready.reply).store, { kind: 'file', status: 'unreachable' });
      assert.ok(ready.ms >= 900 && ready.ms < 2000, `/readyz answered after ${ready.ms} ms (ping deadline 1 s)`);
      assert.equal(health.reply.status, 200);
      assert.ok(health.ms < 500, `/healthz answered after ${health.ms} ms`);
      const line = t.logs.find((l) => l.event === 'store-unreachable');
      assert.match(String((line?.err as { message?: string } | undefined)?.message), /within 1000 ms/);
    } finally {
      // The parked threads must go back whatever failed, or every later test waits on them.
      await release();
    }
    const back = await send(`${t.url}/readyz`);
    assert.equal(back.status, 200, back.text);
    // The late pings finished and cleaned up after themselves.
    await waitFor(() => readdirSync(path).every((name) => !name.startsWith('.tmp-')), 2000, 'no probe file left');
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
    await waitFor(() => t.server.sessions.directory.live.size === 1, 2000, 'the slow request under way');
    const stopping = t.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await stopping;
    await closed;
    const statuses = [...raw.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => Number(m[1]));
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
    assert.equal(t.server.sessions.counters.created, 1);

    // And the ops hook leaves the probes to the server when health is on.
    const on = await serverWith({ workers: { threads: 1 }, hooks: { onConnection: OPS_HOOK } });
    const probe = await send(`${on.url}/healthz`);
    assert.deepEqual(probeBody(probe), { status: 'ok' });
    assert.equal(on.server.sessions.counters.created, 0);
  });
});
