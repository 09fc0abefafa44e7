/**
 * The watchdog and the thread limits against a real server (RELIABILITY.md F3, F4, F5, D8):
 * a hook that never yields, one that fills its heap, and threads that keep dying. In each, the
 * clients of the other thread are answered throughout, and the process survives.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Client, FIXTURE_HOOKS, ROOT, fixtureState, send, waitFor, withServer, type FixtureState, type TestServer } from './helpers.ts';

const HOOKS = { ...FIXTURE_HOOKS, onConnection: join(ROOT, 'test/fixtures/watchdog/onConnection.ts') };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Clients with a session each, sorted by home thread, until `wanted` is met for each thread. */
async function clientsByThread(t: TestServer, perThread: number): Promise<Map<number, Array<{ client: Client; first: FixtureState }>>> {
  const byThread = new Map<number, Array<{ client: Client; first: FixtureState }>>();
  for (let i = 0; i < 40; i++) {
    const client = new Client(t.url);
    const first = await fixtureState(client, '/inc');
    const list = byThread.get(first.threadId) ?? [];
    list.push({ client, first });
    byThread.set(first.threadId, list);
    if (byThread.size === 2 && [...byThread.values()].every((clients) => clients.length >= perThread)) return byThread;
  }
  throw new Error('could not place clients on both threads');
}

/** A client on another thread asking all along; its worst latency and its failures. */
function bystander(client: Client): { stop(): Promise<{ requests: number; worstMs: number; failures: string[] }> } {
  let running = true;
  const failures: string[] = [];
  let worstMs = 0;
  let requests = 0;
  const loop = (async () => {
    let last = (await fixtureState(client)).n;
    while (running) {
      const started = performance.now();
      const reply = await client.get('/inc');
      worstMs = Math.max(worstMs, performance.now() - started);
      requests++;
      const n = reply.status === 200 ? reply.json<FixtureState>().n : undefined;
      if (n !== last + 1) failures.push(`status ${reply.status}, n ${String(n)} after ${last}`);
      last = n ?? last;
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { requests, worstMs, failures };
    },
  };
}

test('F3: a hook that never yields gets 504 at workers.stallTimeout; its thread is replaced, its sessions resume, the other thread answers throughout', async (t) => {
  const config = { workers: { threads: 2, stallTimeout: '1s' }, hooks: { ...HOOKS, connectionTimeout: '1s' }, sessions: { checkpointInterval: '100ms' } };
  await withServer(config, async (s) => {
    const byThread = await clientsByThread(s, 3);
    const [stuckThread, otherThread] = [...byThread.keys()] as [number, number];
    const [spinner, sleeper, resident] = byThread.get(stuckThread)!;
    const watcher = byThread.get(otherThread)![0]!;
    assert.equal((await fixtureState(resident!.client, '/inc')).n, 2);
    // Its checkpoint (every 100 ms) is what it resumes from.
    await sleep(400);

    const watching = bystander(watcher.client);
    const sleeping = sleeper!.client.get('/sleep?ms=5000');
    await sleep(100);
    const started = performance.now();
    const spun = await spinner!.client.get('/spin-forever');
    const spunMs = performance.now() - started;
    const slept = await sleeping;
    assert.equal(spun.status, 504, spun.text);
    assert.ok(spunMs < 2_200, `the spinning request was answered after ${Math.round(spunMs)} ms (stallTimeout 1 s)`);
    assert.equal(slept.status, 502, 'the other request in flight on the stalled thread');
    assert.ok(slept.text.length < 120 && !/at |\.ts/.test(slept.text), slept.text);

    await waitFor(async () => s.server.pool.threadIds.length === 2 && !s.server.pool.threadIds.includes(stuckThread), 5000, 'a replacement thread');
    const back = await fixtureState(resident!.client);
    assert.equal(back.id, resident!.first.id);
    assert.equal(back.resumed, true);
    assert.equal(back.n, 2, 'resumed from its last checkpoint');
    assert.equal((await fixtureState(spinner!.client, '/inc')).id, spinner!.first.id, 'the spinner keeps its session');

    const { requests, worstMs, failures } = await watching.stop();
    t.diagnostic(`bystander: ${requests} requests, worst ${Math.round(worstMs)} ms, ${failures.length} failures; spinner answered after ${Math.round(spunMs)} ms`);
    assert.deepEqual(failures, []);
    assert.ok(worstMs < 1_000, `the bystander waited ${Math.round(worstMs)} ms`);

    await waitFor(async () => s.logs.some((line) => line.event === 'worker-stalled'), 2000, 'the worker-stalled log');
    const stalled = s.logs.filter((line) => line.event === 'worker-stalled');
    assert.equal(stalled.length, 1);
    assert.equal(stalled[0]!.threadId, stuckThread);
    assert.equal(stalled[0]!.level, 50);
    const spinnerLog = s.logs.find((line) => line.event === 'hook-error' && line.code === 'RESIDENT_ERR_HOOK_TIMEOUT');
    assert.match(String(spinnerLog?.msg), /terminated/, 'the spinning session logs its timeout');
    assert.equal(s.server.sessions.stats.workersLost, 1);
    assert.equal(s.server.pool.stalls, 1);
    assert.equal(s.server.pool.degraded, false);
    // hooks.connectionTimeout still answers a hook that awaits forever.
    assert.equal((await watcher.client.get('/hang')).status, 504);
    assert.equal(s.logs.filter((line) => line.event === 'edge-error').length, 0, 'no response was written twice');
  });
});

test('F3 with one thread (the red team\'s case): an 8 s spin is cut at stallTimeout; a request queued behind it on that thread gets 502 at once and its session goes on', async () => {
  await withServer({ workers: { threads: 1, stallTimeout: '1s' }, hooks: { ...HOOKS, connectionTimeout: '1s' } }, async (s) => {
    const bystander = new Client(s.url);
    const first = await fixtureState(bystander, '/inc');
    const timed = async (work: Promise<{ status: number }>) => {
      const started = performance.now();
      const { status } = await work;
      return { status, ms: performance.now() - started };
    };
    const spinning = timed(new Client(s.url).get('/spin?ms=8000'));
    await sleep(100);
    const other = await timed(bystander.get('/inc'));
    const spun = await spinning;
    assert.equal(spun.status, 504);
    assert.ok(spun.ms < 2_200, `the spinning request was answered after ${Math.round(spun.ms)} ms`);
    assert.equal(other.status, 502, 'in flight on the stalled thread');
    assert.ok(other.ms < 2_200, `the bystander on the same thread waited ${Math.round(other.ms)} ms`);
    // The one thread is replaced; the bystander's session resumes there.
    const back = await fixtureState(bystander, '/inc');
    assert.equal(back.id, first.id);
    assert.equal(back.resumed, true);
  });
});

test('F3: a whole process paused longer than stallTimeout (SIGSTOP, a suspended VM) is no reason to terminate its threads', async (t) => {
  if (process.platform === 'win32') return t.skip('no SIGSTOP');
  await withServer({ workers: { threads: 2, stallTimeout: '500ms' } }, async (s) => {
    const client = new Client(s.url);
    const first = await fixtureState(client, '/inc');
    await sleep(300);
    // Every thread of this process stops, the watchdog's and the workers' alike.
    const pauser = spawn('sh', ['-c', `kill -STOP ${process.pid}; sleep 1.5; kill -CONT ${process.pid}`], { stdio: 'ignore' });
    await new Promise((resolve) => pauser.on('exit', resolve));
    await sleep(1_000);
    assert.equal(s.server.pool.stalls, 0);
    assert.equal(s.server.sessions.stats.workersLost, 0);
    const next = await fixtureState(client, '/inc');
    assert.deepEqual([next.id, next.n, next.resumed], [first.id, 2, false]);
  });
});

test('F4/D8: a hook that fills its heap (workers.maxHeapMb 64) loses its thread alone; the process survives and the other thread answers', async (t) => {
  await withServer({ workers: { threads: 2, maxHeapMb: 64 }, hooks: HOOKS }, async (s) => {
    const byThread = await clientsByThread(s, 1);
    const [bombThread, otherThread] = [...byThread.keys()] as [number, number];
    const bomber = byThread.get(bombThread)![0]!;
    const watching = bystander(byThread.get(otherThread)![0]!.client);
    const bombed = await bomber.client.get('/heap-bomb');
    assert.ok([502, 503].includes(bombed.status), `status ${bombed.status}`);
    await waitFor(async () => s.server.pool.threadIds.length === 2 && !s.server.pool.threadIds.includes(bombThread), 5000, 'a replacement thread');
    const { requests, worstMs, failures } = await watching.stop();
    t.diagnostic(`bystander: ${requests} requests, worst ${Math.round(worstMs)} ms, ${failures.length} failures`);
    assert.deepEqual(failures, []);
    assert.ok(worstMs < 1_000, `the bystander waited ${Math.round(worstMs)} ms`);
    const back = await fixtureState(bomber.client);
    assert.equal(back.id, bomber.first.id);
    assert.equal(back.resumed, true);
    await waitFor(async () => s.logs.some((line) => line.event === 'worker-out-of-memory' && line.level === 50), 2000, 'the out-of-memory log');
    assert.equal(s.server.sessions.stats.workersLost, 1);
    assert.equal(s.server.pool.degraded, false);
    assert.equal((await send(`${s.url}/readyz`)).status, 200);
  });
});

test('F5: threads killed by their hooks (exit or uncaught error), ten in a row, are each replaced: a route that kills its thread never trips the crash-loop breaker, and the other routes are served throughout', async () => {
  await withServer({ workers: { threads: 2 }, hooks: HOOKS }, async (s) => {
    const bystander = new Client(s.url);
    for (let deaths = 1; deaths <= 10; deaths++) {
      // Both ways a thread dies: an exit, and an error nobody catches.
      const reply = await new Client(s.url).get(deaths % 2 === 0 ? '/die' : '/throw-uncaught');
      assert.ok([500, 502].includes(reply.status), `status ${reply.status}`);
      await waitFor(async () => s.server.sessions.stats.workersLost === deaths && s.server.pool.threadIds.length === 2, 5000, `thread death ${deaths} replaced`);
      assert.equal((await bystander.get('/inc')).status, 200, `served after death ${deaths}`);
    }
    assert.equal(s.server.pool.degraded, false);
    assert.equal(s.logs.filter((line) => line.event === 'worker-crash-loop').length, 0, 'no alert');
    const ready = await send(`${s.url}/readyz`);
    assert.equal(ready.status, 200);
  });
});

/** A server of two threads whose replacements break (test/fixtures/watchdog/breaksAfterTwoLoads.ts). */
async function withBreakingReplacements(how: 'throw' | 'exit', run: (s: TestServer) => Promise<void>): Promise<void> {
  process.env.RESIDENT_TEST_LOADS = mkdtempSync(join(tmpdir(), 'resident-loads-'));
  process.env.RESIDENT_TEST_BREAK = how;
  const hooks = { ...HOOKS, onConnection: join(ROOT, 'test/fixtures/watchdog/breaksAfterTwoLoads.ts') };
  await withServer({ workers: { threads: 2 }, hooks }, run);
}

for (const [how, reason] of [
  ['throw', /failed to start/],
  ['exit', /5 worker threads died within a minute before any hook ran on them/],
] as const) {
  test(`F5: replacement threads that ${how === 'throw' ? 'fail to load their hooks' : 'exit right after loading'} trip the breaker; the other thread serves on`, async () => {
    await withBreakingReplacements(how, async (s) => {
      const byThread = await clientsByThread(s, 1);
      const [dying, surviving] = [...byThread.keys()] as [number, number];
      await byThread.get(dying)![0]!.client.get('/die');
      const alert = await waitFor(async () => s.logs.find((line) => line.event === 'worker-crash-loop'), 10_000, 'the alert');
      assert.equal(alert!.level, 50);
      assert.match(String(alert!.reason), reason);
      assert.equal(s.server.pool.degraded, true);
      const ready = await send(`${s.url}/readyz`);
      assert.equal(ready.status, 503);
      assert.equal(ready.json().workers.crashLoop, true);
      const other = byThread.get(surviving)![0]!;
      const next = await fixtureState(other.client, '/inc');
      assert.deepEqual([next.id, next.n, next.threadId], [other.first.id, 2, surviving]);
      const moved = await fixtureState(byThread.get(dying)![0]!.client);
      assert.equal(moved.resumed, true, 'the lost session resumes on the surviving thread');
      assert.equal(moved.threadId, surviving);
      const started = s.server.pool.threadIds.length;
      await sleep(500);
      assert.equal(s.server.pool.threadIds.length, started, 'no thread started after the breaker tripped');
    });
  });
}

test('F5: once the breaker tripped and no thread is left, requests are refused (503) before any session is made for them', async () => {
  process.env.RESIDENT_TEST_LOADS = mkdtempSync(join(tmpdir(), 'resident-loads-'));
  process.env.RESIDENT_TEST_BREAK = 'throw';
  // One thread, and the next load is the third: the first replacement fails to load.
  writeFileSync(join(process.env.RESIDENT_TEST_LOADS, 'load-2'), '');
  const hooks = { ...HOOKS, onConnection: join(ROOT, 'test/fixtures/watchdog/breaksAfterTwoLoads.ts') };
  await withServer({ workers: { threads: 1 }, hooks }, async (s) => {
    await new Client(s.url).get('/die');
    await waitFor(async () => s.server.pool.degraded && s.server.pool.threadIds.length === 0, 5000, 'the breaker tripped, no thread left');
    const before = structuredClone(s.server.sessions.stats);
    for (let i = 0; i < 50; i++) {
      const reply = await new Client(s.url).get('/inc');
      assert.equal(reply.status, 503);
      assert.deepEqual(reply.setCookies, []);
    }
    const after = s.server.sessions.stats;
    assert.deepEqual([after.created - before.created, after.lostSuspends - before.lostSuspends, after.suspendedKnown - before.suspendedKnown, after.live], [0, 0, 0, 0]);
  });
});
