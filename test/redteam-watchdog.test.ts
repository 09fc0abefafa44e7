/**
 * Red team 3 against the watchdog (src/contexts/heartbeat.ts, watchdog.ts, load-watch.ts,
 * crash-breaker.ts, pool.ts): each test states what the README promises and drives a real
 * server at it. With one thread, that thread is the edge of every connection (issue 11): a
 * thread the watchdog terminates takes them with it, and nothing listens until its
 * replacement does.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent } from 'undici';
import { Client, describeChild, fixtureHooks, fixtureState, runMain, send, waitFor, withServer, writeTempConfig } from './helpers.ts';

const HOOKS = fixtureHooks('redteam-watchdog');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('a session\'s requests, each 150 ms of synchronous work (a tenth of stallTimeout), do not get their thread killed', async () => {
  await withServer({ workers: { threads: 1, stallTimeout: '1500ms' }, hooks: HOOKS }, async (s) => {
    const client = new Client(s.url);
    const first = await fixtureState(client, '/inc');
    // One client, twelve requests at once: they queue on its context, each a legitimate 150 ms.
    const replies = await Promise.all(Array.from({ length: 12 }, () => client.get('/spin?ms=150')));
    assert.deepEqual(replies.map((reply) => reply.status), Array(12).fill(200));
    assert.equal(s.server.pool.stalls, 0, 'no thread was terminated');
    const after = await fixtureState(client, '/inc');
    assert.deepEqual([after.id, after.n, after.resumed], [first.id, 2, false], 'the context stayed live');
  });
});

test('concurrent new clients of a legitimate route (150 ms of synchronous work each) do not cost the sessions on that thread their state', async () => {
  await withServer({ workers: { threads: 1, stallTimeout: '1500ms' }, hooks: HOOKS }, async (s) => {
    const resident = new Client(s.url);
    const first = await fixtureState(resident, '/inc');
    const replies = await Promise.all(Array.from({ length: 12 }, () => new Client(s.url).get('/spin?ms=150')));
    assert.deepEqual(replies.map((reply) => reply.status), Array(12).fill(200));
    const after = await fixtureState(resident, '/inc');
    assert.deepEqual([after.id, after.n, after.resumed], [first.id, 2, false], 'the resident session kept its live context');
  });
});

test('a client cannot trip the crash-loop breaker: a route that stalls its thread, hit by a new client as the first request on each fresh thread, leaves the server serving', async (t) => {
  // /spin-forever stands for the README's own F3 example, a catastrophic regex on client input.
  await withServer({ workers: { threads: 1, stallTimeout: '500ms' }, hooks: HOOKS }, async (s) => {
    const lost: number[] = [];
    for (let attack = 0; attack < 6; attack++) {
      // Each attack is the first request on a fresh thread: the connections are refused until
      // the replacement listens.
      await waitFor(() => s.server.pool.edges.length === 1 && !lost.includes(s.server.pool.threadIds[0]!), 10_000, `a fresh thread before attack ${attack + 1}`);
      const [thread] = s.server.pool.threadIds as [number];
      const attacker = new Agent({ connections: 1 });
      try {
        const started = performance.now();
        const ended = await send(`${s.url}/spin-forever`, { dispatcher: attacker }).then(
          (reply) => `answered ${reply.status}`,
          (error: { code?: string }) => String(error.code),
        );
        const ms = performance.now() - started;
        // The one thread is the edge of the attacker's connection: it goes with the thread.
        assert.equal(ended, 'UND_ERR_SOCKET', `attack ${attack + 1}`);
        assert.ok(ms < 500 + 1_500, `attack ${attack + 1} was cut after ${Math.round(ms)} ms`);
        t.diagnostic(`attack ${attack + 1}: cut after ${Math.round(ms)} ms`);
      } finally {
        await attacker.destroy().catch(() => {});
      }
      lost.push(thread);
    }
    await waitFor(() => s.server.pool.edges.length === 1 && !lost.includes(s.server.pool.threadIds[0]!), 10_000, 'a thread after the last attack');
    const ready = await send(`${s.url}/readyz`);
    const served = await new Client(s.url).get('/inc');
    assert.deepEqual(
      { degraded: s.server.pool.degraded, ready: ready.status, served: served.status, stalls: s.server.pool.stalls },
      { degraded: false, ready: 200, served: 200, stalls: 6 },
      `six requests from an anonymous client took every thread down for good: ${ready.text}`,
    );
    assert.equal(s.logs.filter((line) => line.event === 'worker-crash-loop').length, 0, 'no alert');
  });
});

test('a replacement thread whose hook module spins as it loads is terminated and counted, not left burning a core with /readyz 503 and no alert', async () => {
  process.env.RESIDENT_TEST_LOADS = mkdtempSync(join(tmpdir(), 'resident-loads-'));
  process.env.RESIDENT_TEST_SPIN_AT_LOAD = 'replacements';
  try {
    await withServer({ workers: { threads: 2, stallTimeout: '500ms' }, hooks: HOOKS }, async (s) => {
      const placed = new Client(s.url);
      const { threadId } = await fixtureState(placed, '/inc');
      await placed.get('/die');
      await waitFor(async () => !s.server.pool.threadIds.includes(threadId), 3000, 'the thread gone');
      // The replacement spins while loading: it never connects, so the watchdog never watches it.
      const alerted = await waitFor(async () => s.logs.some((line) => line.event === 'worker-crash-loop' || line.event === 'worker-stalled') || undefined, 6000, 'the replacement to be dealt with').catch(() => false);
      assert.ok(alerted, `after 6 s: no worker-stalled, no worker-crash-loop; threads ${JSON.stringify(s.server.pool.threadIds)}, readyz ${(await send(`${s.url}/readyz`)).text}`);
    });
  } finally {
    delete process.env.RESIDENT_TEST_SPIN_AT_LOAD;
  }
});

test('a server whose hook module spins as it loads fails to start (exit 2) rather than hang', async () => {
  const config = writeTempConfig({ host: '127.0.0.1', port: 0, store: { kind: 'memory' }, workers: { threads: 1, stallTimeout: '1s' }, hooks: HOOKS, log: { format: 'json' } });
  const child = runMain(['--config', config], { RESIDENT_TEST_SPIN_AT_LOAD: 'always' });
  try {
    const code = await Promise.race([child.exited, sleep(15_000).then(() => 'still running after 15 s')]);
    assert.equal(code, 2, describeChild(child));
    assert.match(describeChild(child), /did not finish loading its hooks within workers\.stallTimeout/);
  } finally {
    child.process.kill('SIGKILL');
  }
});
